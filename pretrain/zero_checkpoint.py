"""Streaming reader of the fp32 weights in a DeepSpeed checkpoint, any ZeRO stage, any world size.

Nothing is consolidated up front: each tensor is assembled on request from the ranks' fp32 partitions, read
through memory maps, so optimizer moments are never read and memory holds one tensor at a time. The maps
are reopened after WINDOW_BYTES have been read through them, so the pages read so far leave the resident
set. For a writer, `pieces` gives a tensor as byte ranges of the checkpoint files, which it copies with
pread, never touching the maps (faster on this path, see pretrain.hf.writer.FileSlice): those bytes do not
count towards the window, so a whole export opens the checkpoint once.

Layout (written by DeepSpeed; see deepspeed/utils/zero_to_fp32.py):
- model states (`mp_rank_00_model_states.pt`, or one `zero_pp_rank_R_mp_rank_00_model_states.pt` per rank
  at stage 3): `param_shapes` (one ordered name -> shape dict per optimizer group), `buffer_names`, the
  `module` state dict (complete buffers; complete weights below stage 3), `shared_params` (alias -> source).
- optimizer states, one `*zero_pp_rank_R_mp_rank_00_optim_states.pt` per rank, `optimizer_state_dict`:
  stage 1/2: `single_partition_of_fp32_groups[g]` is rank R's contiguous slice of group g's flat vector,
  in which parameters follow each other in `param_shapes` order (with `param_alignment_paddings` when given);
  stage 3: `fp32_flat_groups` concatenated is rank R's share of every parameter in turn: ceil(numel / world)
  elements each, the last rank's share zero-padded.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import torch

from data_pipeline.errors import UserError
from pretrain import safe_load
from pretrain.hf.writer import FileSlice

WINDOW_BYTES = 64 << 20  # reopen the memory maps after reading this much through them


def _rank_of(path: Path) -> int:
    return int(re.search(r"zero_pp_rank_(\d+)_", path.name).group(1))


def _load(path: Path) -> dict:
    # mmap: tensors stay on disk until sliced. Only tensors and the DeepSpeed classes safe_load allows.
    return safe_load.load(path, mmap=True)


class ZeroCheckpoint:
    def __init__(self, engine_dir: Path):
        self.dir = engine_dir
        if not engine_dir.is_dir():
            raise UserError(f"{engine_dir} does not exist: the checkpoint is incomplete (no DeepSpeed engine state)")
        model_files = sorted(engine_dir.glob("*model_states.pt"))
        if not model_files:
            raise UserError(f"{engine_dir} holds no *model_states.pt file: the checkpoint is incomplete")
        meta = _load(model_files[0])
        self.buffers = {k: v for k, v in meta["module"].items() if k in set(meta["buffer_names"])}
        shared = meta.get("shared_params") or {}
        self.shared = dict(shared) if isinstance(shared, dict) else {a: s for a, s in shared}
        if meta.get("param_shapes") is None:  # stage 0 records none: the module state is complete
            first: dict[tuple, str] = {}  # tied weights are saved once; both names point at that storage
            for k, v in meta["module"].items():
                where = (v.data_ptr(), v.storage_offset(), tuple(v.shape))
                if where in first and v.numel():
                    self.shared[k] = first[where]
                first.setdefault(where, k)
            self.param_shapes = [{k: v.shape for k, v in meta["module"].items()
                                  if k not in self.buffers and k not in self.shared}]
        else:
            self.param_shapes = [dict(group) for group in meta["param_shapes"]]
        if meta.get("frozen_param_shapes"):
            raise UserError(f"{engine_dir} holds frozen parameters, which Graft's models do not have")
        self.optim_files = sorted(engine_dir.glob("*_optim_states.pt"), key=_rank_of)
        if not self.optim_files:  # plain data parallel (stage 0): the module state is complete
            self.stage, self.world, self.module = 0, 1, meta["module"]
        else:
            osd = _load(self.optim_files[0])["optimizer_state_dict"]
            self.stage = int(osd["zero_stage"])
            count = osd["partition_count"]
            self.world = max(count) if isinstance(count, (list, tuple)) else int(count)
            self.paddings = osd.get("param_alignment_paddings")
            ranks = [_rank_of(p) for p in self.optim_files]
            if ranks != list(range(self.world)):
                raise UserError(f"{engine_dir} is a partial checkpoint: it was written by {self.world} ranks but "
                                f"holds optimizer shards for ranks {ranks}; export an earlier, complete checkpoint")
        del meta
        self._shapes = None
        self._plan = self._make_plan()
        self._ranks = None
        self._read_bytes = 0

    @property
    def shapes(self) -> dict[str, torch.Size]:
        """Every distinct tensor (parameters and buffers) with its shape; tied aliases are in `shared`."""
        if self._shapes is None:
            self._shapes = {name: torch.Size(shape) for group in self.param_shapes for name, shape in group.items()}
            self._shapes.update({name: t.shape for name, t in self.buffers.items()})
        return self._shapes

    def _make_plan(self) -> dict[str, tuple]:
        plan = {}
        if self.stage == 0:
            return plan
        if self.stage == 3:
            offset = 0  # into each rank's concatenated flat groups
            for group in self.param_shapes:
                for name, shape in group.items():
                    numel = math.prod(shape)
                    share = math.ceil(numel / self.world)
                    plan[name] = (None, offset, share, numel)
                    offset += share
            return plan
        for g, group in enumerate(self.param_shapes):
            offset = 0  # into group g's full flat vector (all ranks' partitions one after another)
            for i, (name, shape) in enumerate(group.items()):
                numel = math.prod(shape)
                plan[name] = (g, offset, None, numel)
                offset += numel + (self.paddings[g][i] if self.paddings else 0)
        return plan

    def _open(self) -> None:
        """Memory-map each rank's fp32 flat groups, and find where each lies in its file."""
        key = "fp32_flat_groups" if self.stage == 3 else "single_partition_of_fp32_groups"
        self._ranks, self._file_offsets = [], []
        for path in self.optim_files:
            flats = list(_load(path)["optimizer_state_dict"][key])
            self._ranks.append(flats)
            self._file_offsets.append(_file_offsets(path, flats))

    def _spans(self, name: str) -> list[tuple[int, int, int, int]]:
        """(rank, group, start, stop): the element ranges of the ranks' flat groups whose concatenation is
        parameter `name`."""
        if self._ranks is None or self._read_bytes > WINDOW_BYTES:
            self._ranks, self._read_bytes = None, 0
            self._open()
        group, offset, share, numel = self._plan[name]
        spans = []
        if self.stage == 3:  # every rank holds `share` elements of it, at `offset` of its concatenated groups
            for r, flats in enumerate(self._ranks):
                spans += [(r, g, lo, hi) for g, lo, hi in _cover([f.numel() for f in flats], offset, share)]
        else:  # group `group`'s flat vector is the ranks' partitions one after another
            sizes = [flats[group].numel() for flats in self._ranks]
            spans = [(r, group, lo, hi) for r, lo, hi in _cover(sizes, offset, numel)]
        out, left = [], numel  # stage 3: the last rank's share ends in padding
        for r, g, lo, hi in spans:
            if left <= 0:
                break
            hi = min(hi, lo + left)
            out.append((r, g, lo, hi))
            left -= hi - lo
        return out

    def _mapped(self, r: int, g: int, lo: int, hi: int) -> torch.Tensor:
        """Elements [lo, hi) of rank r's flat group g, a view of its memory map (counted towards the window)."""
        self._read_bytes += 4 * (hi - lo)
        return self._ranks[r][g][lo:hi].detach()

    def pieces(self, name: str) -> list[torch.Tensor | FileSlice]:
        """What tensor `name` is made of, flattened, in order, for a writer that copies them one after another
        without assembling the tensor: byte ranges of the checkpoint's files where the data lies there as is
        (the writer reads those with pread), else fp32 views (memory-mapped where possible). Views are valid
        until the next call."""
        name = self.shared.get(name, name)
        if name in self.buffers or self.stage == 0:
            return self._views(name)
        return [self._mapped(r, g, lo, hi) if self._file_offsets[r][g] is None else
                FileSlice(self.optim_files[r], self._file_offsets[r][g] + 4 * lo, 4 * (hi - lo))
                for r, g, lo, hi in self._spans(name)]

    def _views(self, name: str) -> list[torch.Tensor]:
        """Flat fp32 views whose concatenation is tensor `name`."""
        if name in self.buffers:
            return [self.buffers[name].detach().float().reshape(-1)]
        if self.stage == 0:
            return [self.module[name].detach().float().reshape(-1)]
        return [self._mapped(r, g, lo, hi) for r, g, lo, hi in self._spans(name)]

    def tensor(self, name: str) -> torch.Tensor:
        """The full fp32 tensor `name` (a fresh copy, owning its memory)."""
        name = self.shared.get(name, name)
        shape = self.shapes[name]
        pieces = self._views(name)
        return (torch.cat(pieces) if len(pieces) > 1 else pieces[0].clone()).view(shape)


def _cover(sizes: list[int], offset: int, length: int) -> list[tuple[int, int, int]]:
    """(index, start, stop) within consecutive arrays of `sizes` covering [offset, offset + length) of their
    concatenation."""
    out, start = [], 0
    for i, size in enumerate(sizes):
        lo, hi = start, start + size
        if hi > offset and lo < offset + length:
            out.append((i, max(offset, lo) - lo, min(offset + length, hi) - lo))
        start = hi
    return out


def _file_offsets(path: Path, flats: list[torch.Tensor]) -> list[int | None]:
    """Where in `path` each of `flats` (loaded from it with mmap=True) starts, read from the process's memory
    map (/proc/self/maps): the mapping of `path` that holds the tensor gives its file offset. None where that
    is unknown (no /proc, data not mapped, or not fp32): the pieces are then memory views instead."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return [None] * len(flats)
    target, maps = os.path.realpath(path), []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == target:
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            maps.append((lo, hi, int(fields[2], 16)))
    offsets = []
    for flat in flats:
        ptr, end = flat.data_ptr(), flat.data_ptr() + flat.numel() * flat.element_size()
        where = [off + ptr - lo for lo, hi, off in maps if lo <= ptr and end <= hi]
        offsets.append(where[0] if where and flat.dtype == torch.float32 and flat.is_contiguous() else None)
    return offsets
