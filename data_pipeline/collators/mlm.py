"""Masked language modelling (BERT's dynamic masking): a pure function of the segment and its index."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_pipeline.collators.boundaries import body_sources, gather_body
from data_pipeline.errors import UserError
from data_pipeline.loader import sample_hash, to_tensors
from data_pipeline.permutation import mix64
from data_pipeline.packing import SegmentBatch

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

    def __init__(self, cfg: MLMConfig, special_tokens: dict[str, int], vocab_size: int, seq_len: int, seed: int,
                 doc_index: bool = False):
        """`doc_index`: also emit, for recurrent models, the documents begun at or before each position."""
        self.cfg, self.seq_len, self.seed, self.vocab_size = cfg, seq_len, seed, vocab_size
        self.doc_index = doc_index
        self.cls, self.sep, self.mask = special_tokens["cls"], special_tokens["sep"], special_tokens["mask"]

    @property
    def raw_length(self) -> int:
        return self.seq_len - 2  # room for [CLS] and the final [SEP]

    def __call__(self, batch: SegmentBatch) -> dict:
        rows = np.empty((len(batch), self.seq_len), dtype=np.int64)
        rows[:, 0], rows[:, 1:-1], rows[:, -1] = self.cls, self.bodies(batch), self.sep
        inputs, labels = self.mask_batch(rows, batch.indices)
        out = {"input_ids": inputs, "labels": labels}
        if self.doc_index:
            out["doc_index"] = self.doc_indices(batch)
        return to_tensors(out)

    def doc_indices(self, batch: SegmentBatch) -> np.ndarray:
        """[B, seq_len]: documents begun in the segment at or before each row position (0: the document open
        from the lane's previous segment). [CLS] goes with the first token, each [SEP] with the text before it
        (as `bodies` lays them out: a [SEP] precedes every inner document start)."""
        starts = batch.doc_start[:, : self.raw_length]
        raw = np.cumsum(starts, axis=1)  # per raw token
        # Body position of raw token j: j plus the inner starts at or before it (the [SEP]s inserted before).
        dest = np.arange(self.raw_length) + np.cumsum(starts, axis=1) - starts[:, :1]
        body = np.zeros((len(batch), self.raw_length), dtype=np.int64)
        keep = dest < self.raw_length
        rows = np.broadcast_to(np.arange(len(batch))[:, None], dest.shape)
        body[rows[keep], dest[keep]] = raw[keep]
        body = np.maximum.accumulate(body, axis=1)  # an inserted [SEP] takes the document before it
        return np.concatenate([body[:, :1], body, body[:, -1:]], axis=1)

    def bodies(self, batch: SegmentBatch) -> np.ndarray:
        """[B, raw_length]: each segment's tokens with [SEP] before every inner document start, cut to
        raw_length (the segments are raw_length long, so the [SEP]s push tokens out at the end)."""
        tokens, starts = batch.tokens[:, : self.raw_length], batch.doc_start[:, : self.raw_length]
        if not starts[:, 1:].any():  # the common case at long document lengths
            return tokens
        return gather_body(tokens, body_sources(starts, self.raw_length), self.sep)

    def mask_batch(self, ids: np.ndarray, indices: np.ndarray, exclude: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(masked ids, labels) for rows `ids` [B, T] of samples `indices`: BERT's 80/10/10 corruption of
        round(mask_prob x n) of each row's n non-[CLS]/[SEP] tokens (and not `exclude`d: padding).

        Vectorized over the batch: the noise is a hash of (seed, sample index, position), so a sample is
        masked the same way in any batch, on any rank and after any resume, with no generator per row.
        """
        rows, length = ids.shape
        candidate = (ids != self.cls) & (ids != self.sep)
        if exclude is not None:
            candidate &= ~exclude
        n_candidates = candidate.sum(axis=1)
        n_masked = np.minimum(n_candidates, np.maximum(1, np.rint(self.cfg.mask_prob * n_candidates))).astype(int)
        noise = sample_hash(self.seed, indices, length)
        # The n_masked candidates with the smallest hash are chosen: exactly that many, uniformly (64-bit
        # hashes do not tie). A row's threshold is its n_masked-th smallest key: only the k smallest of each
        # row are sorted (partition first), not the whole row.
        never = np.uint64(2**64 - 1)
        keys = noise  # changed in place: only candidates' noise is read below
        keys[~candidate] = never
        k = int(n_masked.max())
        if not k:
            return ids, np.full_like(ids, IGNORE)
        smallest = np.sort(np.partition(keys, k - 1, axis=1)[:, :k], axis=1)
        threshold = np.take_along_axis(smallest, np.maximum(n_masked, 1)[:, None] - 1, axis=1)
        threshold[n_masked == 0] = never - np.uint64(1)  # rows without candidates: nothing
        where = np.flatnonzero(keys <= threshold)
        labels = np.full_like(ids, IGNORE)
        labels.ravel()[where] = ids.ravel()[where]
        # The chosen positions' corruption: [MASK], a random token or unchanged, from the hash's low 32 bits
        # (independent of the high bits that chose them); a random token from a second hash of the noise.
        picked = noise.ravel()[where]
        action = (picked & np.uint64(0xFFFFFFFF)).astype(np.float64) * 2.0**-32
        masked = ids.copy()
        flat = masked.ravel()
        flat[where[action < self.cfg.replace_with_mask]] = self.mask
        to_random = (action >= self.cfg.replace_with_mask) & \
            (action < self.cfg.replace_with_mask + self.cfg.replace_with_random)
        with np.errstate(over="ignore"):
            flat[where[to_random]] = (mix64(picked[to_random]) % np.uint64(self.vocab_size)).astype(np.int64)
        return masked, labels
