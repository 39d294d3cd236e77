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
from data_pipeline.seed_sequence import seeded_rngs


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


class _Lemire:
    """`select_targets`' draws replayed from raw 64-bit outputs, for a whole batch at once.

    `Generator.integers(low, high)` with a range below 2**32 maps one 32-bit word u of the bit generator to
    low + (u * n) >> 32 (Lemire's method, n = high - low), drawing again only in the rare case that the low 32
    bits of u * n fall under (2**32 - n) % n; PCG64 hands out a 64-bit output's low half, then its high half.
    So while every step of the walk draws two words (a span length, then an offset), step k's are the halves of
    raw output k, and the vectorized walk reproduces the loop's targets bit for bit; a row that meets a
    redraw, or a config under which a draw takes no word (a range of one value), takes the loop."""

    def __init__(self, cfg: PermutationLMConfig, length: int):
        spans = np.arange(1, cfg.max_span_length + 1)
        self.context = np.array([0] + [int(s / cfg.plm_probability) for s in spans], dtype=np.int64)  # by span
        offsets = self.context[1:] - spans + 1  # each offset's number of values
        self.usable = cfg.max_span_length > 1 and bool((offsets > 1).all()) and int(offsets.max()) < 2**32
        self.span_n = np.uint64(cfg.max_span_length)
        self.offset_n = np.concatenate([[1], offsets]).astype(np.uint64)
        self.threshold = (2**32 - self.offset_n) % self.offset_n
        self.span_threshold = np.uint64((2**32 - cfg.max_span_length) % cfg.max_span_length)
        self.steps = -(-length // int(self.context[1:].min()))  # enough steps to pass the end in any walk
        self.length = length

    def targets(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(targets [B, length] bool, steps taken [B], exact [B]) from raw outputs [B, self.steps] uint64."""
        low32, shift = np.uint64(0xFFFFFFFF), np.uint64(32)
        scaled = (raw & low32) * self.span_n
        span = (scaled >> shift).astype(np.int64) + 1
        redraw = (scaled & low32) < self.span_threshold
        n = self.offset_n[span]
        scaled = (raw >> shift) * n
        offset = (scaled >> shift).astype(np.int64)
        redraw |= (scaled & low32) < self.threshold[span]
        context = self.context[span]
        at = np.cumsum(context, axis=1) - context  # where each step's context begins
        taken = at < self.length  # a prefix of the steps: the loop's
        start = np.minimum(at + offset, self.length)
        end = np.minimum(start + span, self.length)
        rows = len(raw)
        edges = np.zeros((rows, self.length + 1), dtype=np.int64)  # +1 at a span's start, -1 past its end
        base = np.arange(rows)[:, None] * (self.length + 1)
        edges.ravel()[:] = np.bincount((base + start)[taken], minlength=edges.size) - \
            np.bincount((base + end)[taken], minlength=edges.size)
        inside = np.cumsum(edges[:, :-1], axis=1) > 0
        return inside, taken.sum(axis=1), ~(redraw & taken).any(axis=1)


class PermutationLMCollator:
    def __init__(self, cfg: PermutationLMConfig, special_tokens: dict[str, int], seq_len: int, seed: int):
        self.cfg, self.seq_len, self.seed = cfg, seq_len, seed
        self.layout = MaskedLMCollator(MaskingConfig(), special_tokens, 1, seq_len, seed)  # its rows only
        self.specials = [t for t in (self.layout.cls, self.layout.sep, special_tokens.get("pad")) if t is not None]
        self._walks: dict[int, _Lemire] = {}  # by row length

    @property
    def raw_length(self) -> int:
        return self.layout.raw_length

    def __call__(self, batch: SegmentBatch) -> dict:
        ids, _ = self.layout.rows(batch)
        n, length = ids.shape
        targets, rngs = self._targets(batch.indices, length)
        chosen = targets & ~np.isin(ids, self.specials)
        counts = chosen.sum(axis=1)
        rows, where = np.nonzero(chosen)  # row-major: each row's targets in order
        rank = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)  # the target's place in its row
        orders = np.full((n, length), -1, dtype=np.int64)
        orders[rows, where] = np.concatenate([rng.permutation(int(c)) for rng, c in zip(rngs, counts, strict=True)])
        # Query i must not see key j iff j is a target and order_i <= order_j: one comparison, with a
        # non-target key's order set to -2, below every query's (>= -1); small integers make it cheap.
        small = np.int16 if length < 2**15 else np.int64
        keys = np.where(chosen, orders, -2).astype(small)
        perm = orders.astype(small)[:, :, None] <= keys[:, None, :]
        most = max(1, int(counts.max(initial=0)))
        mapping = np.zeros((n, most, length), dtype=np.float32)
        mapping[rows, rank, where] = 1.0
        labels = np.full((n, most), IGNORE, dtype=np.int64)
        labels[rows, rank] = ids[rows, where]
        return to_tensors({"input_ids": ids, "perm_mask": perm, "target_mapping": mapping, "labels": labels,
                           "factorization_order": orders})

    def _targets(self, indices: np.ndarray, length: int) -> tuple[np.ndarray, list[np.random.Generator]]:
        """([B, length] bool, generators): `select_targets` of each sample's generator, each generator left as
        the loop leaves it (the factorization order draws from it next)."""
        rngs = seeded_rngs(self.seed, indices)
        walk = self._walks.get(length) or self._walks.setdefault(length, _Lemire(self.cfg, length))
        if not walk.usable:
            return np.stack([select_targets(length, self.cfg, rng) for rng in rngs]), rngs
        targets, steps, exact = walk.targets(np.stack([rng.bit_generator.random_raw(walk.steps) for rng in rngs]))
        for r, rng in enumerate(rngs):
            if exact[r]:
                rng.bit_generator.advance(int(steps[r]) - walk.steps)  # back to just after the walk's draws
            else:  # a redraw: the loop
                rngs[r] = seeded_rng(self.seed, int(indices[r]))
                targets[r] = select_targets(length, self.cfg, rngs[r])
        return targets, rngs
