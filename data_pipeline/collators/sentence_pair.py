"""MLM plus a two-segment task: BERT's next-sentence prediction (NSP) or ALBERT's sentence order (SOP).

Each row is [CLS] A [SEP] B [SEP] (token types 0 then 1), split from one segment at a sentence start drawn
between a quarter and three quarters of the row (format-2 datasets; a format-1 dataset, which records no
sentences, is cut at a random token there). SOP swaps A and B in half the rows (label 1 = swapped); NSP
replaces B in half the rows with as many tokens from a random other segment of the corpus (label 1 = not the
continuation), which the loader reads beside the batch (`wants_partner`, `SegmentBatch.partner`), chosen from
(seed, sample index) alone. Masking is MLMCollator's, after the pair is built.
"""

from __future__ import annotations

import numpy as np

from data_pipeline.collators.boundaries import body_sources, gather_body
from data_pipeline.collators.mlm import MLMCollator, MLMConfig
from data_pipeline.loader import seeded_rng, to_tensors
from data_pipeline.packing import SegmentBatch

PAIR_TASKS = ("nsp", "sop")


class SentencePairCollator(MLMCollator):
    def __init__(self, cfg: MLMConfig, special_tokens: dict[str, int], vocab_size: int, seq_len: int, seed: int,
                 task: str):
        super().__init__(cfg, special_tokens, vocab_size, seq_len, seed)
        assert task in PAIR_TASKS, task
        self.task = task

    @property
    def raw_length(self) -> int:
        return self.seq_len - 3  # [CLS] A [SEP] B [SEP]

    @property
    def wants_partner(self) -> bool:
        """Tells the loader to read a random other segment per row (NSP's negatives)."""
        return self.task == "nsp"

    def _sentence_starts(self, batch: SegmentBatch) -> np.ndarray | None:
        if batch.sentence_start is None:
            return None
        src = body_sources(batch.doc_start, self.raw_length)
        return gather_body(batch.sentence_start[:, :self.raw_length], src, True)  # a new document: a new sentence

    def __call__(self, batch: SegmentBatch) -> dict:
        return to_tensors(self.pair_rows(batch))

    def pair_rows(self, batch: SegmentBatch, swap: bool = True, flips: np.ndarray | None = None
                  ) -> dict[str, np.ndarray]:
        """The rows as arrays; without `swap` every pair stays in order (UniLM's rows); `flips` [B] bool, if
        given, decides which rows are swapped / replaced instead of the coin (StructBERT's three-way task)."""
        n = len(batch)
        inputs = np.empty((n, self.seq_len), dtype=np.int64)
        types = np.zeros((n, self.seq_len), dtype=np.int64)
        pair_labels = np.zeros(n, dtype=np.int64)
        sentences = self._sentence_starts(batch)
        if self.task == "nsp" and swap:
            assert batch.partner is not None, "NSP needs the loader's partner segments (SegmentBatch.partner)"
            partners = self.bodies(batch.partner)
        for row, (index, body) in enumerate(zip(batch.indices, self.bodies(batch), strict=True)):
            rng = seeded_rng(self.seed, int(index))
            lo, hi = len(body) // 4, 3 * len(body) // 4
            inside = np.flatnonzero(sentences[row, lo:hi + 1]) + lo if sentences is not None else []
            cut = int(inside[rng.integers(len(inside))]) if len(inside) else int(rng.integers(lo, hi + 1))
            a, b = body[:cut], body[cut:]
            flip = bool(rng.random() < 0.5) and swap
            if flips is not None:
                flip = bool(flips[row])
            if flip and self.task == "sop":
                a, b = b, a
            elif flip:  # NSP: as many tokens of a random other segment, from a random point of it
                other = partners[row]
                start = int(rng.integers(0, len(other) - len(b) + 1))
                b = other[start:start + len(b)]
            ids = np.concatenate([[self.cls], a, [self.sep], b, [self.sep]])
            inputs[row] = ids
            types[row, len(a) + 2:] = 1
            pair_labels[row] = int(flip)
        inputs, labels = self.mask_batch(inputs, batch.indices)
        return {"input_ids": inputs, "labels": labels, "token_type_ids": types, "pair_labels": pair_labels}
