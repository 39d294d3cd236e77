"""The MLM family's masking: static or dynamic noise; token, whole-word, n-gram or SpanBERT span units.

- token: BERT's, each token on its own (MLMCollator's vectorized hash masking).
- whole_word (BERT's wwm, HF's DataCollatorForWholeWordMask): words in a random order, each taken whole if it
  fits the budget round(mask_prob x candidates), 80/10/10 per token.
- ngram (ALBERT): from word starts in a random order, n words with p(n) proportional to 1/n (n <= max_ngram),
  shortened while over the budget, skipped if they overlap; 80/10/10 per token.
- span (SpanBERT): span lengths in words from the geometric distribution p = span_p truncated to
  1..span_max_words (renormalized), anchored at a uniformly drawn unmasked token's word, grown word by word;
  the budget ceil(mask_prob x candidates) is met exactly (the last span stops mid-word if it must); 80/10/10
  decided once per span. With `sbo`, each masked token also gets its span's outer boundary positions and its
  1-based position in the span (the span-boundary objective's inputs).

Dynamic noise comes from (seed, global sample index), new every epoch; static from (seed, segment index),
the same in every epoch. Word units need word starts (dataset format 2).
"""

from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass

import numpy as np

from data_pipeline.collators.boundaries import body_sources, gather_body, noise_keys, require_boundaries, word_numbers
from data_pipeline.collators.mlm import IGNORE, MLMCollator, MLMConfig
from data_pipeline.errors import UserError
from data_pipeline.loader import to_tensors
from data_pipeline.packing import SegmentBatch
from data_pipeline.seed_sequence import seeded_rngs

UNITS = ("token", "whole_word", "ngram", "span")


@dataclass
class MaskingConfig:
    mask_prob: float = 0.15  # fraction of ordinary tokens that get a label
    replace_with_mask: float = 0.8  # of those (or, for spans, of the spans): become [MASK]
    replace_with_random: float = 0.1  # of those: become a random token; the rest stay unchanged
    unit: str = "token"  # what is masked together: token, whole_word, ngram (ALBERT), span (SpanBERT)
    static: bool = False  # true: the same masks every epoch (noise from the segment); false: new ones (dynamic)
    max_ngram: int = 3  # ngram: longest n-gram, in words
    span_p: float = 0.2  # span: the geometric distribution's parameter
    span_max_words: int = 10  # span: longest span, in words
    sbo: bool = False  # span: add SpanBERT's span-boundary objective (a pretraining-only head) to MLM
    sbo_weight: float = 1.0  # sbo: its term's weight beside MLM's (SpanBERT sums them: 1)

    def __post_init__(self):
        MLMConfig(self.mask_prob, self.replace_with_mask, self.replace_with_random)  # the same checks
        if self.unit not in UNITS:
            raise UserError(f"objective.masking.unit {self.unit!r} is not known; choose one of {', '.join(UNITS)}")
        if self.max_ngram < 1 or self.span_max_words < 1:
            raise UserError("objective.masking.max_ngram and span_max_words must be >= 1")
        if not 0 < self.span_p < 1:
            raise UserError(f"objective.masking.span_p must be in (0, 1), got {self.span_p}")
        if self.sbo and self.unit != "span":
            raise UserError("objective.masking.sbo needs unit: span")
        if not self.sbo_weight >= 0:
            raise UserError(f"objective.masking.sbo_weight must be >= 0, got {self.sbo_weight}")


def span_length_distribution(p: float, longest: int) -> np.ndarray:
    """SpanBERT's span lengths 1..longest: geometric(p) truncated there and renormalized."""
    probs = p * (1 - p) ** np.arange(longest)
    return probs / probs.sum()


def ngram_distribution(longest: int) -> np.ndarray:
    """ALBERT's n-gram lengths 1..longest with p(n) proportional to 1/n."""
    probs = 1.0 / np.arange(1, longest + 1)
    return probs / probs.sum()


class MaskedLMCollator:
    """[CLS] doc [SEP] doc ... [SEP] rows of seq_len tokens, masked by `cfg.unit`.

    Output: input_ids, labels (IGNORE where no loss); with sbo also sbo_left, sbo_right (the positions just
    outside the token's span) and sbo_position (1-based place in the span; 0 where no label).
    """

    def __init__(self, cfg: MaskingConfig, special_tokens: dict[str, int], vocab_size: int, seq_len: int, seed: int):
        self.cfg, self.seed, self.vocab_size, self.seq_len = cfg, seed, vocab_size, seq_len
        self.mlm = MLMCollator(MLMConfig(cfg.mask_prob, cfg.replace_with_mask, cfg.replace_with_random),
                               special_tokens, vocab_size, seq_len, seed)
        self.cls, self.sep, self.mask = self.mlm.cls, self.mlm.sep, self.mlm.mask

    @property
    def raw_length(self) -> int:
        return self.seq_len - 2

    def rows(self, batch: SegmentBatch) -> tuple[np.ndarray, np.ndarray | None]:
        """([B, seq_len] ids, [B, seq_len] word starts or None): [CLS] body [SEP], [SEP] between documents."""
        n, width = len(batch), self.raw_length
        src = body_sources(batch.doc_start, width)
        ids = np.empty((n, self.seq_len), dtype=np.int64)
        ids[:, 0], ids[:, 1:-1], ids[:, -1] = self.cls, gather_body(batch.tokens[:, :width], src, self.sep), self.sep
        if batch.word_start is None:
            return ids, None
        words = np.ones((n, self.seq_len), dtype=bool)
        words[:, 1:-1] = gather_body(batch.word_start[:, :width], src, True)
        words[:, 1] = True  # a segment cut mid-word: its first piece begins the row's first word
        return ids, words

    def __call__(self, batch: SegmentBatch) -> dict:
        ids, words = self.rows(batch)
        keys = noise_keys(batch, self.cfg.static)
        if self.cfg.unit == "token":
            inputs, labels = self.mlm.mask_batch(ids, keys)
            return to_tensors({"input_ids": inputs, "labels": labels})
        require_boundaries(batch, f"masking.unit={self.cfg.unit}")
        out = mask_words(ids, words, keys, self.cfg, self.seed, self.vocab_size, self.mask,
                         specials=(self.cls, self.sep))
        if not self.cfg.sbo:
            out = {k: out[k] for k in ("input_ids", "labels")}
        return to_tensors(out)


def mask_words(ids: np.ndarray, word_start: np.ndarray, keys: np.ndarray, cfg: MaskingConfig, seed: int,
               vocab_size: int, mask_id: int, specials: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Word-unit masking of rows `ids` [B, T] (pure: the noise of row r from (seed, keys[r])).

    Only the draws go row by row, each from its row's own generator; the words' bounds, the labels, the SBO
    inputs and the corruption are laid out for the whole batch at once."""
    candidate = ~np.isin(ids, specials)
    numbers = word_numbers(word_start, candidate)
    # Words are contiguous runs of one number (never across a non-candidate): a word begins where the number
    # changes and finishes before it changes again.
    change = np.diff(numbers, axis=1) != 0
    begins, finishes = candidate.copy(), candidate.copy()
    begins[:, 1:] &= change
    finishes[:, :-1] &= change
    starts, ends = np.nonzero(begins)[1].tolist(), (np.nonzero(finishes)[1] + 1).tolist()
    last = np.cumsum(begins.sum(axis=1)).tolist()  # row r's words: [last[r - 1], last[r])
    pick = {"span": _spans, "whole_word": _whole_words, "ngram": _ngrams}[cfg.unit]
    rows, bounds, draws, randoms = [], [], [], []  # each row's spans, its 80/10/10 draws and random tokens
    first = 0
    for r, (n, rng) in enumerate(zip(candidate.sum(axis=1).tolist(), seeded_rngs(seed, keys), strict=True)):
        lo, first = first, last[r]
        if not n:
            continue
        spans = pick(starts[lo:first], ends[lo:first], n, cfg, rng, candidate[r])
        if not spans:
            continue
        tokens = sum(b - a for a, b in spans)
        rows.append(np.full(len(spans), r))
        bounds.extend(spans)
        # 80/10/10 per span (SpanBERT) or per token (BERT's whole-word and ALBERT's n-gram masking).
        draws.append(rng.random(len(spans)) if cfg.unit == "span" else rng.random(tokens))
        randoms.append(rng.integers(0, vocab_size, tokens))
    inputs, labels = ids.copy(), np.full_like(ids, IGNORE)
    left, right, position = (np.zeros_like(ids) for _ in range(3))
    if rows:
        span_row = np.concatenate(rows)
        bounds = np.array(bounds, dtype=np.int64)
        sizes = bounds[:, 1] - bounds[:, 0]
        span_of = np.repeat(np.arange(len(bounds)), sizes)
        where = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes) + bounds[span_of, 0]
        row = span_row[span_of]
        labels[row, where] = ids[row, where]
        if cfg.sbo:
            left[row, where], right[row, where] = bounds[span_of, 0] - 1, bounds[span_of, 1]
            position[row, where] = where - bounds[span_of, 0] + 1
        draw = np.concatenate(draws)
        if cfg.unit == "span":
            draw = draw[span_of]
        inputs[row, where] = np.where(draw < cfg.replace_with_mask, mask_id,
                                      np.where(draw < cfg.replace_with_mask + cfg.replace_with_random,
                                               np.concatenate(randoms), ids[row, where]))
    return {"input_ids": inputs, "labels": labels, "sbo_left": left, "sbo_right": right, "sbo_position": position}


@functools.lru_cache(maxsize=64)
def _cdf(probs: tuple[float, ...]) -> np.ndarray:
    """Generator.choice's cumulative distribution for `probs` (its arithmetic, so the draws are choice's)."""
    cdf = np.array(probs, dtype=np.float64).cumsum()
    cdf /= cdf[-1]
    return cdf


def _choose(rng: np.random.Generator, probs: np.ndarray) -> int:
    """`rng.choice(np.arange(1, len(probs) + 1), p=probs)`, the same draw without choice's checks."""
    return int(_cdf(tuple(probs.tolist())).searchsorted(rng.random(), side="right")) + 1


def _whole_words(starts, ends, n, cfg, rng, candidate=None) -> list[tuple[int, int]]:
    budget = max(1, round(n * cfg.mask_prob))
    chosen, covered = [], 0
    for w in rng.permutation(len(starts)).tolist():
        if covered >= budget:
            break
        size = ends[w] - starts[w]
        if covered + size > budget:
            continue
        chosen.append((starts[w], ends[w]))
        covered += size
    return chosen


def _ngrams(starts, ends, n, cfg, rng, candidate=None) -> list[tuple[int, int]]:
    budget = max(1, round(n * cfg.mask_prob))
    probs = ngram_distribution(cfg.max_ngram)
    taken = [False] * len(starts)
    chosen, covered = [], 0
    for w in rng.permutation(len(starts)).tolist():
        if covered >= budget:
            break
        longest = min(cfg.max_ngram, len(starts) - w)
        size = _choose(rng, probs[:longest] / probs[:longest].sum())
        while size > 1 and covered + int(ends[w + size - 1] - starts[w]) > budget:
            size -= 1  # ALBERT: a shorter n-gram while this one is over the budget
        tokens = int(ends[w + size - 1] - starts[w])
        if covered + tokens > budget or any(taken[w:w + size]):
            continue
        taken[w:w + size] = [True] * size
        chosen.append((int(starts[w]), int(ends[w + size - 1])))
        covered += tokens
    return chosen


def _spans(starts, ends, n, cfg, rng, candidate) -> list[tuple[int, int]]:
    budget = min(n, math.ceil(n * cfg.mask_prob))
    probs = span_length_distribution(cfg.span_p, cfg.span_max_words)
    masked = np.zeros(len(candidate), dtype=bool)
    spans, covered = [], 0
    while covered < budget:
        words = _choose(rng, probs)
        free = np.flatnonzero(candidate & ~masked)
        anchor = int(free[rng.integers(len(free))])
        w = bisect.bisect_right(starts, anchor) - 1  # the anchor's word
        a = b = int(starts[w])
        for k in range(w, min(w + words, len(starts))):
            if k > w and starts[k] != b:
                break  # a separator lies between: the span ends there
            for t in range(int(starts[k]), int(ends[k])):
                if covered >= budget:
                    break
                covered += not masked[t]
                masked[t] = True
                b = t + 1
        spans.append((a, b))
    return spans
