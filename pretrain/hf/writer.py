"""Streaming safetensors writer: the header is written from shapes alone, then each tensor's bytes as it
arrives, so only one tensor is in memory. Large models are split into shards with transformers' index file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
MAX_SHARD_BYTES = 5 << 30  # transformers' default shard size


def write_safetensors(directory: Path, entries: list[tuple[str, torch.Size]],
                      fetch: Callable[[int], torch.Tensor | list[torch.Tensor]],
                      max_shard_bytes: int = MAX_SHARD_BYTES) -> list[Path]:
    """Write fp32 tensors `entries` (name, shape), the i-th produced by `fetch(i)`, into `directory`.

    `fetch` may return the tensor, or a list of pieces whose concatenation (flattened) is the tensor: they
    are written one after the other, so the tensor is never assembled in memory.

    One `model.safetensors` when it fits in a shard, else `model-0000k-of-0000n.safetensors` plus the index.
    """
    sizes = [math.prod(shape) * 4 for _, shape in entries]
    shards: list[list[int]] = [[]]
    filled = 0
    for i, size in enumerate(sizes):
        if shards[-1] and filled + size > max_shard_bytes:
            shards.append([])
            filled = 0
        shards[-1].append(i)
        filled += size
    names = [SINGLE_FILE] if len(shards) == 1 else \
        [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
    # On a terminal only (tqdm's disable=None): a log gets no redraws.
    with tqdm(total=sum(sizes), unit="B", unit_scale=True, desc="writing safetensors",
              disable=None, leave=False) as bar:
        for name, members in zip(names, shards):
            _write_one(directory / name, [(entries[i][0], entries[i][1], sizes[i]) for i in members],
                       [fetch for _ in members], members, bar.update)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(sizes)},
                 "weight_map": {entries[i][0]: name for name, members in zip(names, shards) for i in members}}
        (directory / INDEX_FILE).write_text(json.dumps(index, indent=2))
    return [directory / n for n in names]


def _write_one(path: Path, specs: list[tuple[str, torch.Size, int]], fetchers, indices: list[int],
               progress: Callable[[int], object]) -> None:
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, size in specs:
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for (name, shape, size), fetch, i in zip(specs, fetchers, indices):
            got = fetch(i)
            pieces = got if isinstance(got, list) else [got]
            if isinstance(got, torch.Tensor) and got.shape != shape:
                raise ValueError(f"{name}: got shape {tuple(got.shape)}, planned {tuple(shape)}")
            if sum(p.numel() for p in pieces) * 4 != size or any(p.dtype != torch.float32 for p in pieces):
                raise ValueError(f"{name}: got {sum(p.numel() for p in pieces)} elements of "
                                 f"{[p.dtype for p in pieces]}, planned {tuple(shape)} float32")
            for piece in pieces:
                if piece.numel():
                    f.write(piece.detach().contiguous().numpy().data)  # no copy of contiguous pieces
            del got, pieces
            progress(size)
