"""Masked language modelling (BERT's dynamic masking): a pure function of the segment and its index."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_pipeline.errors import UserError
from data_pipeline.loader import sample_noise, to_tensors
from data_pipeline.packing import Segment

IGNORE = -100  # label of positions that carry no loss (PyTorch's cross_entropy default ignore_index)


@dataclass
class MLMConfig:
    mask_prob: float = 0.15  # fraction of ordinary tokens that get a label
    replace_with_mask: float = 0.8  # of those: become [MASK]
    replace_with_random: float = 0.1  # of those: become a random token; the rest stay unchanged

    def __post_init__(self):
        if not 0.0 < self.mask_prob < 1.0:
            raise UserError(f"objective.mlm.mask_prob must be in (0, 1), got {self.mask_prob}")
        # Written as "not (valid)" so NaN, which fails every comparison, is rejected too.
        if not (self.replace_with_mask >= 0 and self.replace_with_random >= 0 and
                self.replace_with_mask + self.replace_with_random <= 1.0):
            raise UserError("objective.mlm.replace_with_mask + replace_with_random must be within [0, 1], got "
                            f"{self.replace_with_mask} + {self.replace_with_random}")


class MLMCollator:
    """[CLS] doc [SEP] doc ... [SEP] rows of exactly seq_len tokens, with masked inputs and labels."""

    def __init__(self, cfg: MLMConfig, special_tokens: dict[str, int], vocab_size: int, seq_len: int, seed: int):
        self.cfg, self.seq_len, self.seed, self.vocab_size = cfg, seq_len, seed, vocab_size
        self.cls, self.sep, self.mask = special_tokens["cls"], special_tokens["sep"], special_tokens["mask"]

    @property
    def raw_length(self) -> int:
        return self.seq_len - 2  # room for [CLS] and the final [SEP]

    def __call__(self, samples: list[Segment]) -> dict:
        rows = np.stack([np.concatenate([[self.cls], self.body(s), [self.sep]]) for s in samples])
        inputs, labels = self.mask_batch(rows, np.array([s.index for s in samples]))
        return to_tensors({"input_ids": inputs, "labels": labels})

    def body(self, sample: Segment) -> np.ndarray:
        """The segment's tokens with [SEP] between documents, cut to raw_length."""
        inner = sample.doc_starts[sample.doc_starts > 0]
        if len(inner) == 0:  # the common case at long document lengths: no copy needed
            return sample.tokens[: self.raw_length]
        return np.insert(sample.tokens, inner, self.sep)[: self.raw_length]

    def mask_batch(self, ids: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(masked ids, labels) for rows `ids` [B, T] of samples `indices`: BERT's 80/10/10 corruption of
        round(mask_prob x n) of each row's n non-[CLS]/[SEP] tokens.

        Vectorized over the batch: the noise is a hash of (seed, sample index, position), so a sample is
        masked the same way in any batch, on any rank and after any resume, with no generator per row.
        """
        rows, length = ids.shape
        candidate = (ids != self.cls) & (ids != self.sep)
        n_candidates = candidate.sum(axis=1)
        n_masked = np.minimum(n_candidates, np.maximum(1, np.rint(self.cfg.mask_prob * n_candidates))).astype(int)
        select, action, token = (sample_noise(self.seed, indices, length, stream) for stream in range(3))
        # The n_masked candidates with the smallest noise are chosen: exactly that many, uniformly. Only the
        # k smallest keys of each row are sorted (argpartition first), not the whole row.
        keys = np.where(candidate, select, 2.0)
        chosen = np.zeros_like(candidate)
        k = int(n_masked.max())
        if k:
            smallest = np.argpartition(keys, k - 1, axis=1)[:, :k]
            smallest = np.take_along_axis(smallest, np.argsort(np.take_along_axis(keys, smallest, 1), 1), 1)
            np.put_along_axis(chosen, smallest, np.arange(k)[None, :] < n_masked[:, None], axis=1)
        labels = np.where(chosen, ids, IGNORE)
        to_mask = chosen & (action < self.cfg.replace_with_mask)
        to_random = chosen & ~to_mask & (action < self.cfg.replace_with_mask + self.cfg.replace_with_random)
        masked = np.where(to_mask, self.mask, ids)
        masked = np.where(to_random, (token * self.vocab_size).astype(np.int64), masked)
        return masked, labels
