"""The input side of the sentence-level contrastive term (InfoNCE with in-batch negatives), with MLM on the
anchor as DeCLUTR trains it.

Two views per sample, both from one document (DeCLUTR's recipe, its adjacent-span case): the segment's
longest run of one document is cut at a sentence start in its middle half (a random token there on format-1
data, or where the run holds none); the part before is the anchor, the part after its positive, each as
[CLS] part [SEP] padded to seq_len. The anchor gets BERT's MLM masking (MLMCollator's, padding excluded);
the positive stays whole. Row i's positive is row i of the other view and every other row of the micro-batch
is a negative (`pretrain.objectives.losses.mlm_contrastive_loss`). Noise from (seed, sample index) only.

Output: input_ids (the masked anchor), attention_mask, labels (MLM, anchor positions), positive_ids,
positive_mask, all [B, seq_len].
"""

from __future__ import annotations

import numpy as np

from data_pipeline.collators.boundaries import body_sources, gather_body
from data_pipeline.collators.mlm import MLMCollator, MLMConfig
from data_pipeline.loader import seeded_rng, to_tensors
from data_pipeline.packing import SegmentBatch


class ContrastiveViewsCollator:
    def __init__(self, cfg: MLMConfig, special_tokens: dict[str, int], vocab_size: int, seq_len: int, seed: int):
        self.seq_len, self.seed = seq_len, seed
        self.mlm = MLMCollator(cfg, special_tokens, vocab_size, seq_len, seed)
        self.cls, self.sep, self.pad = special_tokens["cls"], special_tokens["sep"], special_tokens["pad"]

    @property
    def raw_length(self) -> int:
        return self.seq_len - 2

    def __call__(self, batch: SegmentBatch) -> dict:
        n, width = len(batch), self.raw_length
        src = body_sources(batch.doc_start, width)
        body = gather_body(batch.tokens[:, :width], src, self.sep)
        sentences = None if batch.sentence_start is None else gather_body(batch.sentence_start[:, :width], src, True)
        views = {k: np.full((n, self.seq_len), self.pad, dtype=np.int64) for k in ("anchor", "positive")}
        for r, index in enumerate(batch.indices):
            rng = seeded_rng(self.seed, int(index))
            start, end = longest_document_run(src[r])
            cut = view_cut(start, end, None if sentences is None else sentences[r], rng)
            for key, part in (("anchor", body[r, start:cut]), ("positive", body[r, cut:end])):
                views[key][r, :len(part) + 2] = np.concatenate([[self.cls], part, [self.sep]])
        padding = views["anchor"] == self.pad
        anchor, labels = self.mlm.mask_batch(views["anchor"], batch.indices, exclude=padding)
        return to_tensors({"input_ids": anchor, "attention_mask": (~padding).astype(np.int64), "labels": labels,
                           "positive_ids": views["positive"],
                           "positive_mask": (views["positive"] != self.pad).astype(np.int64)})


def longest_document_run(src: np.ndarray) -> tuple[int, int]:
    """[start, end) of the longest stretch of a row body without a separator (`body_sources`' -1 columns):
    the largest piece of one document; the first of equal ones."""
    edges = np.flatnonzero(src < 0)
    bounds = np.concatenate([[-1], edges, [len(src)]])
    lengths = np.diff(bounds) - 1
    k = int(np.argmax(lengths))
    return int(bounds[k] + 1), int(bounds[k + 1])


def view_cut(start: int, end: int, sentences: np.ndarray | None, rng: np.random.Generator) -> int:
    """Where the run [start, end) splits into anchor and positive: a sentence start in its middle half, drawn
    uniformly (else a token there), leaving each view at least one token when the run has two."""
    n = end - start
    if n < 2:
        return end  # nothing to split: the positive is empty ([CLS] [SEP])
    lo, hi = start + max(1, n // 4), start + min(n - 1, 3 * n // 4)
    inside = np.flatnonzero(sentences[lo:hi + 1]) + lo if sentences is not None else []
    return int(inside[rng.integers(len(inside))]) if len(inside) else int(rng.integers(lo, hi + 1))
