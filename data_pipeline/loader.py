"""The streaming loader: a seeded global sample order, sliced across ranks and DataLoader workers.

Global sample g (counted from the start of training, across epochs) is segment `Permutation(n, seed,
epoch)[g % n]` with `epoch = g // n`: an O(1) lookup, so resuming at sample 10^8 costs what starting does.
A loader started (or resumed) at sample `base` reads micro-batch group k = samples
[base + k * W * B, base + (k + 1) * W * B) for W ranks of B samples; rank r takes the r-th block of B, and
DataLoader worker w of N builds groups w, w + N, ... The only state is the number of samples consumed, so
a run resumed with any number of ranks, workers or micro-batch size continues exactly where all ranks
together stopped: nothing skipped, nothing repeated.

A worker builds whole micro-batches: the order of its next LOOKUP_GROUPS groups in one vectorised lookup,
the segments of a micro-batch in one gather per shard (packing.read_batch), the collator over the batch
arrays; the batch reaches the training process through shared memory (handoff.py), not the pipe.

Recurrence lanes (`data.lanes: true`, for Transformer-XL): the global batch is L = W * B lanes; lane j
owns the contiguous run of segments [j * m, (j + 1) * m) of the epoch (m = n // L, rotated by a seeded
offset per epoch), and row j at step t + 1 reads the segment after row j's at step t. The lane count and
step are the state; resuming needs the same global batch (the lanes), at any W x B that gives it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from data_pipeline.errors import UserError
from data_pipeline.handoff import RingReceiver, WorkerRing
from data_pipeline.packing import DEFAULT_CACHE_BYTES, PackedSegments, SegmentBatch
from data_pipeline.permutation import Permutation, mix64, sample_order  # noqa: F401 - sample_order re-exported

LOOKUP_GROUPS = 32  # micro-batch groups whose sample order a worker looks up at once (~1 ms)


@dataclass
class DataConfig:
    path: str = "???"  # a directory written by `graft prepare`, or its URL (http(s)://, s3://, gs://)
    seq_len: int = 128  # tokens per sample the model sees; the objective decides how many raw tokens it uses
    num_workers: int = 1  # DataLoader worker processes per rank
    prefetch_factor: int = 4
    lanes: bool = False  # recurrence mode: row j of each batch continues row j of the previous batch
    cache_dir: str | None = None  # local cache for a remote dataset's shards (default: ~/.cache/graft)
    cache_bytes: int = DEFAULT_CACHE_BYTES  # the cache's size bound
    # 0: each epoch is one full shuffle. N > 0: visit shard-sized blocks in a seeded order, N at a time, and
    # shuffle within them, so a remote dataset needs only about N shards in its cache at once.
    shuffle_window_shards: int = 0

    def __post_init__(self):
        if self.seq_len < 8:
            raise UserError(f"data.seq_len must be at least 8, got {self.seq_len}")
        if self.num_workers < 0:
            raise UserError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.prefetch_factor < 1:
            raise UserError(f"data.prefetch_factor must be >= 1, got {self.prefetch_factor}")
        if self.shuffle_window_shards < 0:
            raise UserError(f"data.shuffle_window_shards must be >= 0 (0: full shuffle), got "
                            f"{self.shuffle_window_shards}")
        if self.cache_bytes <= 0:
            raise UserError(f"data.cache_bytes must be positive, got {self.cache_bytes}")


class GlobalOrder:
    """Global sample index -> segment index: shuffled epochs, windowed shuffles, or recurrence lanes.

    With `window` > 0 blocks (two-level shuffle, for remote datasets whose cache holds only a few shards),
    the epoch's segments are cut into blocks of `block` consecutive segments (about a shard each); the blocks
    are visited in a seeded order, `window` at a time, and the samples of those `window` blocks are shuffled
    among themselves, so only about `window` shards are needed at once. A short last block stays last.
    """

    def __init__(self, n: int, seed: int, lanes: int = 0, block: int = 1, window: int = 0):
        self.n, self.seed, self.lanes, self.block, self.window = n, seed, lanes, max(1, block), window
        self._perms: dict[tuple, Permutation] = {}
        if lanes and n < lanes:
            raise UserError(f"recurrence lanes need at least one segment per lane: the dataset has {n} segments "
                            f"for {lanes} lanes (ranks x micro-batch); use more data or a smaller batch")

    def segments(self, first: int, count: int) -> np.ndarray:
        return self.segments_at(np.arange(first, first + count, dtype=np.int64))

    def segments_at(self, g: np.ndarray) -> np.ndarray:
        """The segments of global samples `g` (any shape)."""
        shape, g = g.shape, g.ravel()
        if self.lanes:
            return self._lane_segments(g).reshape(shape)
        out = np.empty(len(g), dtype=np.int64)
        epochs = g // self.n
        for epoch in np.unique(epochs):
            here = epochs == epoch
            pos = g[here] % self.n
            out[here] = self._windowed(int(epoch), pos) if self.window else self._perm(self.n, epoch).map(pos)
        return out.reshape(shape)

    def _perm(self, n: int, epoch: int, *salt: int) -> Permutation:
        key = (n, int(epoch), *salt)
        if key not in self._perms:
            if len(self._perms) > 64:  # consecutive reads need only the current epoch's few
                self._perms.clear()
            self._perms[key] = Permutation(n, self.seed, int(epoch), salt)
        return self._perms[key]

    def _windowed(self, epoch: int, pos: np.ndarray) -> np.ndarray:
        per_window = self.window * self.block
        full_blocks = self.n // self.block
        out = np.empty_like(pos)
        w_of = pos // per_window
        for w in np.unique(w_of):
            here = w_of == w
            size = min(per_window, self.n - int(w) * per_window)
            j = self._perm(size, epoch, 1, int(w)).map(pos[here] % per_window)
            b = int(w) * self.window + j // self.block  # block position in this epoch's block order
            full = b < full_blocks
            blocks = b.copy()
            blocks[full] = self._perm(full_blocks, epoch, 2).map(b[full]) if full.any() else b[full]
            out[here] = blocks * self.block + j % self.block
        return out

    def _lane_segments(self, g: np.ndarray) -> np.ndarray:
        per_lane = self.n // self.lanes
        step, lane = g // self.lanes, g % self.lanes
        epoch = step // per_lane
        epochs, which = np.unique(epoch, return_inverse=True)
        shift = np.array([np.random.default_rng([self.seed, int(e), 0x1A4E]).integers(self.n) for e in epochs],
                         dtype=np.int64)[which]
        return (lane * per_lane + step % per_lane + shift) % self.n


class _RankStream(IterableDataset):
    """One rank's micro-batches from global sample `base` on; worker w of N yields groups w, w+N, ... of them.

    DataLoader reads its workers round-robin, so the batches arrive in group order.
    """

    def __init__(self, segments: PackedSegments, collate: Callable[[SegmentBatch], dict], order: GlobalOrder,
                 rank: int, world: int, micro_batch: int, base: int, prefetch: int):
        self.segments, self.collate, self.order = segments, collate, order
        self.rank, self.world, self.micro_batch, self.base = rank, world, micro_batch, base
        self.prefetch = prefetch

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        ring = WorkerRing(worker, self.prefetch + 2) if info else None
        offsets = np.arange(self.micro_batch, dtype=np.int64)
        for group in itertools.count(worker, workers * LOOKUP_GROUPS):
            # The order of several of this worker's groups in one lookup: its cost is mostly per call.
            groups = group + workers * np.arange(LOOKUP_GROUPS)
            indices = (self.base + (groups[:, None] * self.world + self.rank) * self.micro_batch) + offsets
            chosen = self.order.segments_at(indices)
            partners = getattr(self.collate, "wants_partner", False)  # NSP: a random other segment per row
            for row_indices, row_segments in zip(indices, chosen, strict=True):
                batch = self.segments.read_batch(row_segments, row_indices)
                if partners:
                    batch.partner = self.segments.read_batch(
                        partner_segments(self.order.seed, row_indices, row_segments, len(self.segments)), row_indices)
                batch = self.collate(batch)
                yield ring.pack(batch) if ring else batch


class Loader:
    """Iterates one rank's micro-batches forever; `state_dict()` is the global count of consumed samples."""

    def __init__(self, cfg: DataConfig, raw_length: int, collate: Callable[[SegmentBatch], dict],
                 seed: int, rank: int, world: int, micro_batch: int):
        self.cfg, self.collate, self.seed = cfg, collate, seed
        self.rank, self.world, self.micro_batch = rank, world, micro_batch
        self.segments = PackedSegments(cfg.path, raw_length, cfg.cache_dir, cfg.cache_bytes)
        self.lanes = world * micro_batch if cfg.lanes else 0
        shards = self.segments.manifest.shards
        block = round(sum(s.tokens for s in shards) / max(1, len(shards)) / raw_length)  # segments per shard
        self.order = GlobalOrder(len(self.segments), seed, self.lanes, block=block, window=cfg.shuffle_window_shards)
        self.consumed = 0

    def state_dict(self) -> dict:
        state = {"consumed_samples": self.consumed, "seed": self.seed}
        if self.lanes:
            state["lanes"] = self.lanes  # lane j's position is segment order.segments(consumed + j, 1)
        return state

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed:
            raise UserError(f"the checkpoint's data order used seed {state['seed']}, the config says {self.seed}; "
                            "resume with the original seed")
        if state.get("lanes", 0) != self.lanes:
            raise UserError(f"the checkpoint read {state.get('lanes', 0) or 'no'} recurrence lanes, this run has "
                            f"{self.lanes or 'none'} (data.lanes x ranks x micro-batch): keep data.lanes and the "
                            "global batch size of the original run")
        self.consumed = state["consumed_samples"]

    def __iter__(self) -> Iterator[dict]:
        per_group = self.world * self.micro_batch
        stream = _RankStream(self.segments, self.collate, self.order, self.rank, self.world, self.micro_batch,
                             base=self.consumed, prefetch=self.cfg.prefetch_factor)
        workers = self.cfg.num_workers
        # An own generator: seeding workers must not draw from the global torch RNG, whose state (dropout
        # noise) is checkpointed; a resumed run would otherwise see shifted dropout masks.
        loader = DataLoader(stream, batch_size=None, num_workers=workers,
                            prefetch_factor=self.cfg.prefetch_factor if workers else None,
                            persistent_workers=False, generator=torch.Generator().manual_seed(self.seed))
        receiver = RingReceiver()
        for message in loader:
            self.consumed += per_group
            yield receiver.unpack(message)


def seeded_rng(seed: int, index: int) -> np.random.Generator:
    """The noise source for global sample `index`: identical after resume and at any world size."""
    return np.random.default_rng([seed, index])


def sample_hash(seed: int, indices: np.ndarray, length: int) -> np.ndarray:
    """Uniform 64-bit noise of shape [len(indices), length], a hash of (seed, sample index, position):
    identical for a sample after resume, at any world size, and in whatever batch it lands."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps on purpose
        key = mix64(np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15))
        rows = mix64(np.asarray(indices, dtype=np.uint64) ^ key)[:, None]
        return mix64(rows + np.arange(length, dtype=np.uint64)[None, :] * np.uint64(0xD1B54A32D192ED03))


def partner_segments(seed: int, indices: np.ndarray, segments: np.ndarray, n: int) -> np.ndarray:
    """For each sample, another segment of the corpus (never its own when n > 1), chosen from (seed, sample
    index) alone: NSP's random next sentence is the same at any micro-batch size, world size and after resume."""
    if n < 2:
        return np.asarray(segments, dtype=np.int64)
    draw = (sample_hash(seed ^ 0x4E5350, indices, 1)[:, 0] % np.uint64(n - 1)).astype(np.int64)
    return (np.asarray(segments, dtype=np.int64) + 1 + draw) % n


def to_tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
