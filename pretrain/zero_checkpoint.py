"""Streaming reader of the fp32 weights in a DeepSpeed checkpoint, any ZeRO stage, any world size.

Nothing is consolidated up front: each tensor is assembled on request from the ranks' fp32 partitions, read
through memory maps, so optimizer moments are never read and memory holds one tensor at a time. The maps
are reopened every WINDOW_BYTES so the pages read so far leave the resident set.

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
import re
from pathlib import Path

import torch

from data_pipeline.errors import UserError

WINDOW_BYTES = 64 << 20  # reopen the memory maps after reading this much


def _rank_of(path: Path) -> int:
    return int(re.search(r"zero_pp_rank_(\d+)_", path.name).group(1))


def _load(path: Path) -> dict:
    # mmap: tensors stay on disk until sliced. weights_only=False: DeepSpeed pickles its own enums and config.
    return torch.load(path, map_location="cpu", mmap=True, weights_only=False)


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

    def _open(self) -> list[list[torch.Tensor]]:
        """Each rank's fp32 flat groups, memory-mapped."""
        key = "fp32_flat_groups" if self.stage == 3 else "single_partition_of_fp32_groups"
        ranks = []
        for path in self.optim_files:
            osd = _load(path)["optimizer_state_dict"]
            ranks.append(list(osd[key]))
        return ranks

    def pieces(self, name: str) -> list[torch.Tensor]:
        """Flat fp32 views whose concatenation is tensor `name` (memory-mapped where possible, so a writer
        can copy them to a file without assembling the tensor). Valid until the next call."""
        name = self.shared.get(name, name)
        if name in self.buffers:
            return [self.buffers[name].detach().float().reshape(-1)]
        if self.stage == 0:
            return [self.module[name].detach().float().reshape(-1)]
        if self._ranks is None or self._read_bytes > WINDOW_BYTES:
            self._ranks, self._read_bytes = None, 0
            self._ranks = self._open()
        group, offset, share, numel = self._plan[name]
        if self.stage == 3:
            pieces = [p for flat in self._ranks for p in _slices(flat, offset, share)]
        else:
            pieces = self._stage12_pieces(group, offset, numel)
        out, left = [], numel  # stage 3: the last rank's share ends in padding
        for p in pieces:
            if left <= 0:
                break
            out.append(p[:left].detach())
            left -= out[-1].numel()
        self._read_bytes += numel * 4
        return out

    def tensor(self, name: str) -> torch.Tensor:
        """The full fp32 tensor `name` (a fresh copy, owning its memory)."""
        shape = self.shapes[self.shared.get(name, name)]
        pieces = self.pieces(name)
        return (torch.cat(pieces) if len(pieces) > 1 else pieces[0].clone()).view(shape)

    def _stage12_pieces(self, group: int, offset: int, numel: int) -> list[torch.Tensor]:
        pieces, pos, end = [], offset, offset + numel
        start = 0
        for flats in self._ranks:
            part = flats[group]
            lo, hi = start, start + part.numel()
            if hi > pos and lo < end:
                pieces.append(part[max(pos, lo) - lo:min(end, hi) - lo])
            start = hi
        return pieces


def _slices(flats: list[torch.Tensor], offset: int, length: int) -> list[torch.Tensor]:
    """Views covering [offset, offset + length) of the concatenation of `flats`."""
    pieces, start = [], 0
    for flat in flats:
        lo, hi = start, start + flat.numel()
        if hi > offset and lo < offset + length:
            pieces.append(flat[max(offset, lo) - lo:min(offset + length, hi) - lo])
        start = hi
    return pieces
