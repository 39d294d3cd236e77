"""Sentence starts in raw text, by rule: no model, no download, the same answer on every machine.

A sentence ends at ., !, ? or ... (and any closing quotes or brackets after them) followed by white space and
a character that can open a sentence (a capital letter, a digit, an opening quote or bracket), unless the
word before the stop is a common abbreviation ("Dr.", "e.g.") or a single capital initial ("J. Smith"). It
also ends at 。！？ (no space needed) and at a blank line (paragraphs, headings, list blocks).

`word_and_sentence_flags` turns a tokenizer's encoding into the per-token flags a format-2 shard stores:
word starts from the tokenizer's own pre-tokenization (its word ids), so they are right for WordPiece,
byte-level BPE and Unigram alike, and sentence starts mapped onto tokens through the character offsets.
"""

from __future__ import annotations

import re

import numpy as np

from data_pipeline.shards import SENTENCE, WORD

ABBREVIATIONS = frozenset("""mr mrs ms dr prof sr jr st vs etc e.g i.e cf al fig figs eq no nos vol pp ch sec
approx dept est inc ltd co corp jan feb mar apr jun jul aug sep sept oct nov dec mt ft gen col lt sgt rev""".split())
_STOP = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*\s+(?=[\"'\u201c\u2018(\[\w])|\n[ \t]*\n\s*(?=\S)")
_CJK_STOP = re.compile(r"[\u3002\uff01\uff1f]+[\u300d\u300f\u201d\u2019)]*\s*(?=\S)")
_LAST_WORD = re.compile(r"(\S+?)[.!?\u2026]+[\"'\u201d\u2019)\]]*\s*$")


def sentence_starts(text: str) -> list[int]:
    """Character offsets where the sentences of `text` begin; the first is where its first non-space is."""
    first = len(text) - len(text.lstrip())
    starts = {first} if first < len(text) else set()
    for match in _STOP.finditer(text):
        nxt = text[match.end()]
        if not match.group().startswith("\n"):
            if not (nxt.isupper() or nxt.isdigit() or not nxt.isalnum()):
                continue  # "e.g. the": a lower-case continuation
            word = _LAST_WORD.search(text, max(0, match.start() - 40), match.end())
            stem = word.group(1).lower().lstrip("(\"'") if word else ""
            if stem in ABBREVIATIONS or (len(stem) == 1 and stem.isalpha()):
                continue
        starts.add(match.end())
    starts.update(m.end() for m in _CJK_STOP.finditer(text))
    return sorted(starts)


def word_and_sentence_flags(word_ids: list, offsets: list, text: str) -> np.ndarray:
    """uint8 flags, one per token of an encoding (`word_ids`, `offsets` as `tokenizers` gives them) of `text`:
    WORD where a pre-token begins, SENTENCE (always on a word start) where a sentence begins. The first token
    starts both."""
    n = len(word_ids)
    flags = np.zeros(n, dtype=np.uint8)
    if not n:
        return flags
    words = np.array([-1 if w is None else w for w in word_ids], dtype=np.int64)
    word_start = np.ones(n, dtype=bool)
    word_start[1:] = words[1:] != words[:-1]
    flags[word_start] |= WORD
    token_starts = np.array([start for start, _ in offsets], dtype=np.int64)
    # The token holding a sentence's first character. When it is inside a pre-token: moved back to the
    # pre-token's start if only white space lies between (a lone "▁" or "Ġ" token), else made a word start
    # itself (the pre-tokenizer glued "end.\n\nNext" together; "Next" is a word all the same).
    holders = np.searchsorted(token_starts, np.array(sentence_starts(text), dtype=np.int64), side="right") - 1
    word_starts = np.flatnonzero(word_start)
    for holder in np.maximum(holders, 0):
        at = int(word_starts[np.searchsorted(word_starts, holder, side="right") - 1])
        if text[token_starts[at]:token_starts[holder]].strip():
            at = int(holder)
            flags[at] |= WORD
        flags[at] |= SENTENCE
    flags[0] |= SENTENCE
    return flags
