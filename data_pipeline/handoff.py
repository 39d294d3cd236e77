"""Batches from DataLoader workers to the training process through shared memory, not the pipe.

A tensor a worker returns normally travels as a fresh shared-memory file whose descriptor goes over a socket
and is mapped again by the receiver: about 0.5 ms per batch, as much as building an MLM batch costs. Here
each worker owns a ring of slots in one shared-memory buffer, sent to the training process once with its
first batch; a batch is written into the next free slot and only (worker, slot, layout) crosses the pipe.
The receiver copies the batch out (the trainer may hold several batches) and marks the slot free.

The DataLoader gives each worker at most `prefetch_factor` requests ahead of the batch being received, so a
ring of prefetch_factor + 2 slots is never full; the wait in `_free_slot` is only a safeguard.
"""

from __future__ import annotations

import math
import time

import torch

ALIGN = 64  # bytes: each tensor of a slot starts at a cache-line boundary


def _layout(batch: dict[str, torch.Tensor]) -> tuple[list[tuple], int]:
    """[(key, dtype, shape, byte offset)] of the batch's tensors in a slot, and the slot's size."""
    entries, offset = [], 0
    for key, tensor in batch.items():
        entries.append((key, tensor.dtype, tuple(tensor.shape), offset))
        offset += -(-tensor.numel() * tensor.element_size() // ALIGN) * ALIGN
    return entries, offset


def _view(buffer: torch.Tensor, dtype: torch.dtype, shape: tuple, offset: int) -> torch.Tensor:
    return buffer[offset:offset + math.prod(shape) * dtype.itemsize].view(dtype).view(shape)


class WorkerRing:
    """The sending side, inside one DataLoader worker."""

    def __init__(self, worker: int, slots: int):
        self.worker, self.slots = worker, slots
        self.layout = self.buffer = self.busy = None
        self.next = 0

    def pack(self, batch: dict) -> object:
        """What the worker yields instead of `batch`: a slot message, or the batch itself if it does not fit."""
        if not isinstance(batch, dict) or not all(isinstance(v, torch.Tensor) for v in batch.values()):
            return batch
        layout, size = _layout(batch)
        if self.buffer is None:
            self.layout, self.slot_bytes = layout, size
            # A flag per slot (1: holds a batch not yet copied out) and the slots, both in shared memory.
            self.busy = torch.zeros(self.slots, dtype=torch.int32).share_memory_()
            self.buffer = torch.empty(self.slots * size, dtype=torch.uint8).share_memory_()
            ring = (self.busy, self.buffer, layout, size)
        elif [e[:3] for e in layout] != [e[:3] for e in self.layout]:
            return batch  # another shape than the ring was made for: the ordinary way
        else:
            ring = None
        slot = self._free_slot()
        base = slot * self.slot_bytes
        for key, dtype, shape, offset in layout:
            _view(self.buffer, dtype, shape, base + offset).copy_(batch[key])
        self.busy[slot] = 1
        return {"ring_worker": self.worker, "ring_slot": slot, "ring": ring}

    def _free_slot(self) -> int:
        slot = self.next
        self.next = (slot + 1) % self.slots
        while int(self.busy[slot]):  # see the module docstring: does not happen with enough slots
            time.sleep(1e-4)
        return slot


class RingReceiver:
    """The receiving side, in the training process: turns slot messages back into batches."""

    def __init__(self):
        self.rings: dict[int, tuple] = {}  # worker -> (busy flags, buffer, layout, slot size)

    def unpack(self, message: dict) -> dict:
        if "ring_slot" not in message:
            return message  # a batch that came the ordinary way
        worker, slot = message["ring_worker"], message["ring_slot"]
        if message["ring"] is not None:  # a worker's first batch brings its ring
            self.rings[worker] = message["ring"]
        busy, buffer, layout, slot_bytes = self.rings[worker]
        base = slot * slot_bytes
        batch = {key: _view(buffer, dtype, shape, base + offset).clone() for key, dtype, shape, offset in layout}
        busy[slot] = 0
        return batch
