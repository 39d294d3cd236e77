"""MLM plus a two-segment task: BERT's next-sentence prediction (NSP) or ALBERT's sentence order (SOP).

Each row is [CLS] A [SEP] B [SEP] (token types 0 then 1), split from one segment at a random point. SOP swaps
A and B in half the rows (label 1 = swapped); NSP replaces B in half the rows with the end of the next sample
in the batch (label 1 = not the continuation). Masking is MLMCollator's, after the pair is built.
"""

from __future__ import annotations

import numpy as np

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

    def __call__(self, batch: SegmentBatch) -> dict:
        n = len(batch)
        inputs = np.empty((n, self.seq_len), dtype=np.int64)
        types = np.zeros((n, self.seq_len), dtype=np.int64)
        pair_labels = np.zeros(n, dtype=np.int64)
        splits = []
        for index, body in zip(batch.indices, self.bodies(batch), strict=True):
            rng = seeded_rng(self.seed, int(index))
            cut = int(rng.integers(len(body) // 4, 3 * len(body) // 4 + 1))
            splits.append((body, cut, rng))
        for row, (body, cut, rng) in enumerate(splits):
            a, b = body[:cut], body[cut:]
            flip = bool(rng.random() < 0.5)
            if flip and self.task == "sop":
                a, b = b, a
            elif flip:  # NSP: as many tokens from the end of the next sample in the batch
                other = splits[(row + 1) % n][0]
                flip = n > 1 and len(other) >= len(b)
                b = other[len(other) - len(b):] if flip else b
            ids = np.concatenate([[self.cls], a, [self.sep], b, [self.sep]])
            inputs[row] = ids
            types[row, len(a) + 2:] = 1
            pair_labels[row] = int(flip)
        inputs, labels = self.mask_batch(inputs, batch.indices)
        return to_tensors({"input_ids": inputs, "labels": labels, "token_type_ids": types,
                           "pair_labels": pair_labels})
