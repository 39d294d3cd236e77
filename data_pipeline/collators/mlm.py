"""Masked language modelling (BERT's dynamic masking): a pure function of the segment and its index."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_pipeline.errors import UserError
from data_pipeline.loader import seeded_rng, to_tensors
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
        inputs = np.empty((len(samples), self.seq_len), dtype=np.int64)
        labels = np.full((len(samples), self.seq_len), IGNORE, dtype=np.int64)
        for row, sample in enumerate(samples):
            inputs[row], labels[row] = self._one(sample)
        return to_tensors({"input_ids": inputs, "labels": labels})

    def body(self, sample: Segment) -> np.ndarray:
        """The segment's tokens with [SEP] between documents, cut to raw_length."""
        inner = sample.doc_starts[sample.doc_starts > 0]
        return np.insert(sample.tokens, inner, self.sep)[: self.raw_length]

    def _one(self, sample: Segment) -> tuple[np.ndarray, np.ndarray]:
        ids = np.concatenate([[self.cls], self.body(sample), [self.sep]])
        return self.mask_tokens(ids, seeded_rng(self.seed, sample.index))

    def mask_tokens(self, ids: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(masked ids, labels): BERT's 80/10/10 corruption of mask_prob of the non-[CLS]/[SEP] tokens."""
        candidates = np.flatnonzero((ids != self.cls) & (ids != self.sep))
        n_masked = min(len(candidates), max(1, round(self.cfg.mask_prob * len(candidates))))
        chosen = rng.choice(candidates, size=n_masked, replace=False)
        labels = np.full_like(ids, IGNORE)
        labels[chosen] = ids[chosen]
        action = rng.random(n_masked)
        to_mask = chosen[action < self.cfg.replace_with_mask]
        to_random = chosen[(action >= self.cfg.replace_with_mask) &
                           (action < self.cfg.replace_with_mask + self.cfg.replace_with_random)]
        ids = ids.copy()
        ids[to_mask] = self.mask
        ids[to_random] = rng.integers(0, self.vocab_size, size=len(to_random))
        return ids, labels
