"""The streaming loader: a seeded global sample order, sliced across ranks and DataLoader workers.

Global sample g (counted from the start of training, across epochs) is segment `order(epoch)[g % n]` with
`epoch = g // n`. Micro-batch group k holds samples [k * W * B, (k + 1) * W * B) for W ranks of B samples;
rank r takes the r-th block of B. The only state is the number of samples consumed, so resuming costs
nothing and works at any world size whose global batch divides it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from data_pipeline.errors import UserError
from data_pipeline.packing import PackedSegments, Segment


@dataclass
class DataConfig:
    path: str = "???"  # a directory written by `graft prepare`
    seq_len: int = 128  # tokens per sample the model sees; the objective decides how many raw tokens it uses
    num_workers: int = 1  # DataLoader worker processes per rank
    prefetch_factor: int = 4

    def __post_init__(self):
        if self.seq_len < 8:
            raise UserError(f"data.seq_len must be at least 8, got {self.seq_len}")
        if self.num_workers < 0:
            raise UserError(f"data.num_workers must be >= 0, got {self.num_workers}")


def sample_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The permutation of segments for one epoch: a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(n)


class _RankStream(IterableDataset):
    """One rank's micro-batches from group `first_group` on; worker w of N yields groups w, w+N, ... of them.

    DataLoader reads its workers round-robin, so the batches arrive in group order.
    """

    def __init__(self, segments: PackedSegments, collate: Callable[[list[Segment]], dict],
                 seed: int, rank: int, world: int, micro_batch: int, first_group: int):
        self.segments, self.collate, self.seed = segments, collate, seed
        self.rank, self.world, self.micro_batch, self.first_group = rank, world, micro_batch, first_group

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        n = len(self.segments)
        epoch, order = -1, None
        group = self.first_group + worker
        while True:
            first = (group * self.world + self.rank) * self.micro_batch
            samples = []
            for g in range(first, first + self.micro_batch):
                if g // n != epoch:
                    epoch = g // n
                    order = sample_order(self.seed, epoch, n)
                tokens, doc_starts = self.segments.read(int(order[g % n]))
                samples.append(Segment(index=g, tokens=tokens, doc_starts=doc_starts))
            yield self.collate(samples)
            group += workers


class Loader:
    """Iterates one rank's micro-batches forever; `state_dict()` is the global count of consumed samples."""

    def __init__(self, cfg: DataConfig, raw_length: int, collate: Callable[[list[Segment]], dict],
                 seed: int, rank: int, world: int, micro_batch: int):
        self.cfg, self.collate, self.seed = cfg, collate, seed
        self.rank, self.world, self.micro_batch = rank, world, micro_batch
        self.segments = PackedSegments(cfg.path, raw_length)
        self.consumed = 0

    def state_dict(self) -> dict:
        return {"consumed_samples": self.consumed, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed:
            raise UserError(f"the checkpoint's data order used seed {state['seed']}, the config says {self.seed}; "
                            "resume with the original seed")
        per_group = self.world * self.micro_batch
        if state["consumed_samples"] % per_group:
            raise UserError(f"cannot resume at sample {state['consumed_samples']} with {self.world} ranks x "
                            f"{self.micro_batch} samples: keep the global batch size of the original run")
        self.consumed = state["consumed_samples"]

    def __iter__(self) -> Iterator[dict]:
        per_group = self.world * self.micro_batch
        stream = _RankStream(self.segments, self.collate, self.seed, self.rank, self.world, self.micro_batch,
                             first_group=self.consumed // per_group)
        workers = self.cfg.num_workers
        # An own generator: seeding workers must not draw from the global torch RNG, whose state (dropout
        # noise) is checkpointed; a resumed run would otherwise see shifted dropout masks.
        loader = DataLoader(stream, batch_size=None, num_workers=workers,
                            prefetch_factor=self.cfg.prefetch_factor if workers else None,
                            generator=torch.Generator().manual_seed(self.seed))
        for batch in loader:
            self.consumed += per_group
            yield batch


def seeded_rng(seed: int, index: int) -> np.random.Generator:
    """The noise source for global sample `index`: identical after resume and at any world size."""
    return np.random.default_rng([seed, index])


def to_tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
