"""Streaming safetensors writer: the header is written from shapes alone, then each tensor's bytes as it
arrives, so only one tensor is in memory. Large models are split into shards with transformers' index file.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
MAX_SHARD_BYTES = 5 << 30  # transformers' default shard size
CHUNK_BYTES = 1 << 30  # per write call; Linux moves at most 2 GiB - 4 KiB in one
COPY_BUFFER_BYTES = 1 << 20  # FileSlice bytes pass through a buffer this size, small enough to stay in L2 cache


@dataclass(frozen=True)
class FileSlice:
    """Bytes [offset, offset + nbytes) of the file at `path`, holding fp32 data as is (a checkpoint's).
    The writer reads them with pread into a small buffer and writes that: no page of the source is mapped
    into the process, which is faster than copying from a memory map and takes no memory (figures:
    bench/README.md, export.py)."""
    path: Path
    offset: int
    nbytes: int


def write_safetensors(directory: Path, entries: list[tuple[str, torch.Size]],
                      fetch: Callable[[int], torch.Tensor | list[torch.Tensor]],
                      max_shard_bytes: int = MAX_SHARD_BYTES) -> list[Path]:
    """Write fp32 tensors `entries` (name, shape), the i-th produced by `fetch(i)`, into `directory`.

    `fetch` may return the tensor, or a list of pieces whose concatenation (flattened) is the tensor: they
    are written one after the other, so the tensor is never assembled in memory. A piece is a tensor or a
    `FileSlice`.

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
        for name, members in zip(names, shards, strict=True):
            _write_one(directory / name, [(entries[i][0], entries[i][1], sizes[i]) for i in members],
                       [fetch for _ in members], members, bar.update)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(sizes)},
                 "weight_map": {entries[i][0]: name
                                for name, members in zip(names, shards, strict=True) for i in members}}
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
    sources: dict[Path, int] = {}  # FileSlice path -> open descriptor
    buffer = memoryview(bytearray(COPY_BUFFER_BYTES))
    try:
        with open(path, "wb", buffering=0) as f:
            _write_all(f.fileno(), len(raw).to_bytes(8, "little") + raw)
            for (name, shape, size), fetch, i in zip(specs, fetchers, indices, strict=True):
                got = fetch(i)
                pieces = got if isinstance(got, list) else [got]
                if isinstance(got, torch.Tensor) and got.shape != shape:
                    raise ValueError(f"{name}: got shape {tuple(got.shape)}, planned {tuple(shape)}")
                tensors = [p for p in pieces if isinstance(p, torch.Tensor)]
                nbytes = sum(p.numel() * 4 if isinstance(p, torch.Tensor) else p.nbytes for p in pieces)
                if nbytes != size or any(p.dtype != torch.float32 for p in tensors):
                    raise ValueError(f"{name}: got {nbytes} bytes of {[p.dtype for p in tensors] or 'file data'}, "
                                     f"planned {tuple(shape)} float32 ({size} bytes)")
                for piece in pieces:
                    if isinstance(piece, FileSlice):
                        if piece.path not in sources:
                            sources[piece.path] = os.open(piece.path, os.O_RDONLY)
                        _copy_range(sources[piece.path], piece, f.fileno(), buffer)
                    elif piece.numel():
                        _write_all(f.fileno(), piece.detach().contiguous().numpy().data)  # no copy if contiguous
                del got, pieces, tensors
                progress(size)
    finally:
        for fd in sources.values():
            os.close(fd)


def _write_all(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view[:CHUNK_BYTES]):]


def _copy_range(source: int, piece: FileSlice, fd: int, buffer: memoryview) -> None:
    """Append `piece` (of the open file `source`) to `fd`, through `buffer`."""
    done = 0
    while done < piece.nbytes:
        count = os.preadv(source, [buffer[:min(len(buffer), piece.nbytes - done)]], piece.offset + done)
        if count == 0:
            raise ValueError(f"{piece.path} ends before byte {piece.offset + piece.nbytes}: the checkpoint is "
                             "truncated")
        _write_all(fd, buffer[:count])
        done += count
