"""Transformer-XL memory as training state: one rank's lanes' memory, saved and restored by global lane.

With `data.lanes`, row j of rank r's micro-batches is global lane r * B + j (B: the micro-batch size), and every
micro-batch continues the previous one's rows (see data_pipeline.loader). So one `MemoryCache` per rank,
carried from micro-batch to micro-batch, is each lane's memory. A checkpoint stores every rank's rows with
their global lane numbers; a run resumed at another world size (the same lanes, another W x B) picks the
rows of the lanes it now reads.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pretrain.models.memory import Memory, MemoryCache
from pretrain.run_dir import MEMORY_DIR, memory_file


class LaneMemory:
    def __init__(self, rank: int, micro_batch: int):
        self.lanes = torch.arange(rank * micro_batch, (rank + 1) * micro_batch)
        self.cache = MemoryCache()

    def attach(self, micro_batches: list[dict]) -> list[dict]:
        """The micro-batches with this rank's memory cache, which each forward reads and advances in turn."""
        return [{**batch, "memory": self.cache} for batch in micro_batches]

    def save(self, checkpoint_dir: Path, rank: int) -> None:
        memory = self.cache.memory
        if memory is None:
            return  # nothing trained yet
        path = memory_file(checkpoint_dir, rank)
        path.parent.mkdir(exist_ok=True)
        torch.save({"lanes": self.lanes, "layers": [t.cpu() for t in memory.layers], "valid": memory.valid.cpu()},
                   path)

    def load(self, checkpoint_dir: Path, device=None) -> None:
        """This rank's lanes from whichever ranks saved them (all files are read: they are small)."""
        files = sorted((checkpoint_dir / MEMORY_DIR).glob("rank_*.pt"))
        if not files:
            self.cache.memory = None
            return
        saved = [torch.load(f, weights_only=True) for f in files]
        lanes = torch.cat([s["lanes"] for s in saved])
        where = torch.full((int(lanes.max()) + 1,), -1, dtype=torch.long)
        where[lanes] = torch.arange(len(lanes))
        rows = where[self.lanes]
        assert bool((rows >= 0).all()), f"checkpoint {checkpoint_dir} has no memory for lanes {self.lanes.tolist()}"
        depth = len(saved[0]["layers"])
        layers = [torch.cat([s["layers"][i] for s in saved])[rows].to(device) for i in range(depth)]
        self.cache.memory = Memory(layers, torch.cat([s["valid"] for s in saved])[rows].to(device))
