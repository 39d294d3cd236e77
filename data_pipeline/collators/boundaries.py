"""What word- and sentence-aware collators share: the check that the dataset records boundaries, the layout of
a segment into a row with separators between documents, and word numbering.

Format-1 datasets have no word or sentence starts; an objective that needs them stops with a UserError that
says to re-run `graft prepare` (which writes format 2).
"""

from __future__ import annotations

import numpy as np

from data_pipeline.errors import UserError
from data_pipeline.packing import SegmentBatch
from data_pipeline.shards import Manifest


def require_boundaries(source: Manifest | SegmentBatch, objective: str, parallel: bool = False) -> None:
    """A clear error when the dataset lacks the word and sentence starts (or, with `parallel`, the pairs)
    that `objective` needs."""
    has = source.has_boundaries if isinstance(source, Manifest) else source.word_start is not None
    if not has:
        raise UserError(f"objective {objective} needs word and sentence starts, which this dataset (format 1) does "
                        "not record; re-run `graft prepare` on the raw text to write format 2")
    pairs = source.parallel if isinstance(source, Manifest) else source.side_start is not None
    if parallel and not pairs:
        raise UserError(f"objective {objective} needs parallel text; prepare it with `graft prepare PAIRS.jsonl "
                        "--pair-fields A B --language-fields LANG_A LANG_B`")


def body_sources(doc_start: np.ndarray, width: int, extra_starts: np.ndarray | None = None) -> np.ndarray:
    """[B, width] int64: for each column of a row body, the segment column it shows, or -1 for a separator
    placed before every inner document start (and before every `extra_starts` position, e.g. a pair's second
    side). Columns pushed past `width` are dropped, as MLM's bodies are."""
    starts = doc_start[:, :width].copy()
    starts[:, 0] = False
    if extra_starts is not None:
        starts |= extra_starts[:, :width]
        starts[:, 0] = False
    rows = len(starts)
    dest = np.arange(width)[None, :] + np.cumsum(starts, axis=1)  # column j moves right past its separators
    src = np.full((rows, width), -1, dtype=np.int64)
    keep = dest < width
    r = np.broadcast_to(np.arange(rows)[:, None], dest.shape)
    src[r[keep], dest[keep]] = np.broadcast_to(np.arange(width)[None, :], dest.shape)[keep]
    return src


def gather_body(values: np.ndarray, src: np.ndarray, fill) -> np.ndarray:
    """`values` [B, length] laid out by `body_sources`' map, `fill` in separator columns."""
    out = np.take_along_axis(values, np.maximum(src, 0), axis=1)
    return np.where(src >= 0, out, fill)


def word_numbers(word_start: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """[B, T] int64: each candidate token's word number within its row (0, 1, ...), -1 elsewhere. A word never
    spans a non-candidate (a separator starts a new word after it)."""
    starts = word_start & candidate
    starts[:, 1:] |= candidate[:, 1:] & ~candidate[:, :-1]
    starts[:, 0] |= candidate[:, 0]
    numbers = np.cumsum(starts, axis=1) - 1
    return np.where(candidate, numbers, -1)


def noise_keys(batch: SegmentBatch, static: bool) -> np.ndarray:
    """The integers a row's noise is drawn from with the seed: the global sample index (dynamic masking: new
    noise every epoch) or, static, the segment's index in the dataset (the same noise in every epoch, as BERT's
    masks fixed at data creation)."""
    if static:
        assert batch.segment_ids is not None, "static masking needs the loader's segment ids"
        return batch.segment_ids
    return batch.indices


def separated_documents(doc_starts: np.ndarray, length: int, limit: int) -> np.ndarray:
    """For the tokens of a `length`-token segment with a separator inserted before every inner document start
    (`np.insert(tokens, inner, sep)[:limit]`, as T5's and BART's collators lay a segment out): the documents
    begun in the segment at or before each (recurrent models' `doc_index`; 0: the document open from the
    lane's previous segment). A separator goes with the document it closes."""
    docs = np.zeros(length, dtype=np.int64)
    docs[doc_starts] = 1
    docs = np.cumsum(docs)
    inner = doc_starts[doc_starts > 0]
    return np.insert(docs, inner, docs[inner - 1])[:limit]
