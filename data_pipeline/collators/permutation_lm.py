"""XLNet's permuted language modelling: targets in spans, a factorization order per sample, and the
two-stream attention masks it implies.

Rows are [CLS] body [SEP] with [SEP] between documents, as the MLM family's (the export is the family's
masked-LM class, fine-tuned on such rows). Targets (HF's DataCollatorForPermutationLanguageModeling, XLNet's
partial prediction): walking the row, each step takes a span of L ~ U{1..max_span_length} tokens inside a
context of L / plm_probability tokens, at a uniform offset in it; so about plm_probability of the tokens
are predicted (XLNet's K = 6 at 1/6). [CLS]/[SEP]/<pad> are never targets. The factorization order puts
every non-target first (they see each other fully) and the targets after them in a random order. Query i
may attend to key j iff j is a non-target, or j is a target strictly before i in the order; the content
stream adds i itself.

Output (noise from (seed, sample index)): input_ids (the original tokens: the query stream never reads a
target's own token, the content stream does), perm_mask [B, T, T] bool (True: query i must NOT attend to j,
as transformers' perm_mask), target_mapping [B, P, T] float one-hot of each row's targets (P the most
targets of any row; rows with fewer are zero-padded), labels [B, P] (IGNORE on padding), and
factorization_order [B, T] (-1 for non-targets, 0.. for targets).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_pipeline.collators.masked_lm import MaskedLMCollator, MaskingConfig
from data_pipeline.collators.mlm import IGNORE
from data_pipeline.errors import UserError
from data_pipeline.loader import seeded_rng, to_tensors
from data_pipeline.packing import SegmentBatch


@dataclass
class PermutationLMConfig:
    plm_probability: float = 1 / 6  # share of tokens predicted (XLNet's 1/K)
    max_span_length: int = 5  # longest target span

    def __post_init__(self):
        if not 0 < self.plm_probability < 1:
            raise UserError(f"objective.plm.plm_probability must be in (0, 1), got {self.plm_probability}")
        if self.max_span_length < 1:
            raise UserError(f"objective.plm.max_span_length must be >= 1, got {self.max_span_length}")


def select_targets(length: int, cfg: PermutationLMConfig, rng: np.random.Generator) -> np.ndarray:
    """Boolean [length]: the span-wise targets of one row."""
    targets = np.zeros(length, dtype=bool)
    at = 0
    while at < length:
        span = int(rng.integers(1, cfg.max_span_length + 1))
        context = int(span / cfg.plm_probability)
        start = at + int(rng.integers(0, context - span + 1))
        targets[start:start + span] = True
        at += context
    return targets


def permutation_masks(targets: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(perm_mask [T, T] True = query i must not see key j, order [T]) for one row's boolean `targets`."""
    order = np.full(len(targets), -1, dtype=np.int64)
    where = np.flatnonzero(targets)
    order[where] = rng.permutation(len(where))
    blocked = (order[:, None] <= order[None, :]) & targets[None, :]
    return blocked, order


class PermutationLMCollator:
    def __init__(self, cfg: PermutationLMConfig, special_tokens: dict[str, int], seq_len: int, seed: int):
        self.cfg, self.seq_len, self.seed = cfg, seq_len, seed
        self.layout = MaskedLMCollator(MaskingConfig(), special_tokens, 1, seq_len, seed)  # its rows only
        self.specials = [t for t in (self.layout.cls, self.layout.sep, special_tokens.get("pad")) if t is not None]

    @property
    def raw_length(self) -> int:
        return self.layout.raw_length

    def __call__(self, batch: SegmentBatch) -> dict:
        ids, _ = self.layout.rows(batch)
        n, length = ids.shape
        perm = np.zeros((n, length, length), dtype=bool)
        orders = np.full((n, length), -1, dtype=np.int64)
        targets = []
        for r, index in enumerate(batch.indices):
            rng = seeded_rng(self.seed, int(index))
            chosen = select_targets(length, self.cfg, rng) & ~np.isin(ids[r], self.specials)
            perm[r], orders[r] = permutation_masks(chosen, rng)
            targets.append(np.flatnonzero(chosen))
        most = max(1, max(len(t) for t in targets))
        mapping = np.zeros((n, most, length), dtype=np.float32)
        labels = np.full((n, most), IGNORE, dtype=np.int64)
        for r, where in enumerate(targets):
            mapping[r, np.arange(len(where)), where] = 1.0
            labels[r, :len(where)] = ids[r, where]
        return to_tensors({"input_ids": ids, "perm_mask": perm, "target_mapping": mapping, "labels": labels,
                           "factorization_order": orders})
