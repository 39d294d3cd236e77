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
from data_pipeline.loader import to_tensors
from data_pipeline.packing import SegmentBatch
from data_pipeline.seed_sequence import seeded_rngs

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
        if not batch.doc_start[:, 1:self.raw_length].any():  # no separators: the body is the segment
            return batch.sentence_start[:, :self.raw_length]
        src = body_sources(batch.doc_start, self.raw_length)
        return gather_body(batch.sentence_start[:, :self.raw_length], src, True)  # a new document: a new sentence

    def __call__(self, batch: SegmentBatch) -> dict:
        return to_tensors(self.pair_rows(batch))

    def pair_rows(self, batch: SegmentBatch, swap: bool = True, flips: np.ndarray | None = None,
                  kinds: np.ndarray | None = None, rngs: list | None = None) -> dict[str, np.ndarray]:
        """The rows as arrays; without `swap` every pair stays in order (UniLM's rows); `flips` [B] bool, if
        given, decides which rows are swapped / replaced instead of the coin; `kinds` [B], if given, each row's
        pair instead: 0 in order, 1 A and B swapped, 2 B from the partner (StructBERT's three-way task);
        `rngs`: the rows' seeded_rngs(seed, indices), if the caller has made them.

        Each row's draws (the cut, the coin, the partner's start) come from its own generator, in that order;
        the rows are then laid out for the whole batch at once."""
        n, width = len(batch), self.raw_length
        lo, hi = width // 4, 3 * width // 4
        sentences = self._sentence_starts(batch)
        if sentences is not None:  # the sentence starts in [lo, hi] of each row, row after row
            rows, columns = np.nonzero(sentences[:, lo:hi + 1])
            counts = np.bincount(rows, minlength=n).tolist()
            columns, firsts = (columns + lo).tolist(), (np.cumsum(counts) - counts).tolist()
        replaced = 2 if self.task == "nsp" else 1  # what a flip does
        cut, kind, start = (np.zeros(n, dtype=np.int64) for _ in range(3))
        for row, rng in enumerate(rngs or seeded_rngs(self.seed, batch.indices)):
            inside = counts[row] if sentences is not None else 0
            cut[row] = columns[firsts[row] + int(rng.integers(inside))] if inside else int(rng.integers(lo, hi + 1))
            flip = bool(rng.random() < 0.5) and swap
            if flips is not None:
                flip = bool(flips[row])
            kind[row] = kinds[row] if kinds is not None else replaced * flip
            if kind[row] == 2:  # NSP: as many tokens of a random other segment, from a random point of it
                start[row] = int(rng.integers(0, cut[row] + 1))
        source = self.bodies(batch)
        if (kind == 2).any():
            assert batch.partner is not None, "NSP needs the loader's partner segments (SegmentBatch.partner)"
            source = np.concatenate([source, self.bodies(batch.partner)], axis=1)  # the partner's from `width` on
        # [CLS] A [SEP] B [SEP]: A is body[:cut] (swapped: body[cut:]), B the rest of the body (swapped:
        # body[:cut]; replaced: partner[start:], as long as body[cut:]).
        a_length = np.where(kind == 1, width - cut, cut)[:, None]
        position = np.arange(self.seq_len)[None, :]
        a_from = np.where(kind == 1, cut, 0)[:, None] + position - 1
        b_from = np.choose(kind, [cut, np.zeros_like(cut), start + width])[:, None] + position - a_length - 2
        columns = np.where(position <= a_length, a_from, b_from)
        np.clip(columns, 0, source.shape[1] - 1, out=columns)  # the [CLS] and [SEP] columns, set below
        inputs = source[np.arange(n)[:, None], columns]
        inputs[:, 0], inputs[:, -1] = self.cls, self.sep
        inputs[np.arange(n), a_length[:, 0] + 1] = self.sep
        types = (position >= a_length + 2).astype(np.int64)
        inputs, labels = self.mask_batch(inputs, batch.indices)
        return {"input_ids": inputs, "labels": labels, "token_type_ids": types,
                "pair_labels": (kind != 0).astype(np.int64)}
