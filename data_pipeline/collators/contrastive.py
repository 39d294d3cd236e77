"""The input side of a sentence-level contrastive term (InfoNCE with in-batch negatives).

Each sample gives two views: its body cut at a sentence start in the middle half (a random token on format-1
data), the first part as the anchor and the rest as its positive, each as [CLS] part [SEP] padded to
seq_len. Row i's positive is row i of the other view; every other row of the global batch is a negative,
so the model side computes logits = sim(anchor_i, positive_j) / temperature and a cross-entropy with
target i. Noise from (seed, sample index).

Output: anchor_ids, anchor_mask, positive_ids, positive_mask [B, seq_len].
"""

from __future__ import annotations

import numpy as np

from data_pipeline.collators.boundaries import body_sources, gather_body
from data_pipeline.loader import seeded_rng, to_tensors
from data_pipeline.packing import SegmentBatch


class ContrastiveViewsCollator:
    def __init__(self, special_tokens: dict[str, int], seq_len: int, seed: int):
        self.seq_len, self.seed = seq_len, seed
        self.cls, self.sep, self.pad = special_tokens["cls"], special_tokens["sep"], special_tokens["pad"]

    @property
    def raw_length(self) -> int:
        return self.seq_len - 2

    def __call__(self, batch: SegmentBatch) -> dict:
        n, width = len(batch), self.raw_length
        src = body_sources(batch.doc_start, width)
        body = gather_body(batch.tokens[:, :width], src, self.sep)
        sentences = None if batch.sentence_start is None else gather_body(batch.sentence_start[:, :width], src, True)
        views = {k: np.full((n, self.seq_len), self.pad, dtype=np.int64) for k in ("anchor_ids", "positive_ids")}
        for r, index in enumerate(batch.indices):
            rng = seeded_rng(self.seed, int(index))
            lo, hi = width // 4, 3 * width // 4
            inside = np.flatnonzero(sentences[r, lo:hi + 1]) + lo if sentences is not None else []
            cut = int(inside[rng.integers(len(inside))]) if len(inside) else int(rng.integers(lo, hi + 1))
            for key, part in (("anchor_ids", body[r, :cut]), ("positive_ids", body[r, cut:])):
                views[key][r, :len(part) + 2] = np.concatenate([[self.cls], part, [self.sep]])
        views["anchor_mask"] = (views["anchor_ids"] != self.pad).astype(np.int64)
        views["positive_mask"] = (views["positive_ids"] != self.pad).astype(np.int64)
        return to_tensors(views)
