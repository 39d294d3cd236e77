"""Checkpoint directories: atomic writes, a `latest` pointer, keep-last-K, and reading weights back.

    checkpoints/
      latest                 names the newest complete checkpoint, e.g. "step_00000500"
      step_00000500/
        engine/              DeepSpeed's files: model and optimizer shards of every rank
        train_state.json     TrainState and the loader state
        rng/rank_00000.pt    each rank's RNG states (dropout)

A checkpoint is written as `step_XXXXXXXX.tmp` and renamed once every rank has finished, so `latest`
only ever names complete checkpoints, and a kill at any moment leaves the previous one intact.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from data_pipeline.errors import UserError
from data_pipeline.shards import write_atomic

LATEST = "latest"


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    tokens: int = 0  # tokens fed to the model so far


def checkpoints_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def step_name(step: int) -> str:
    return f"step_{step:08d}"


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = checkpoints_dir(run_dir) / LATEST
    if not pointer.is_file():
        return None
    path = checkpoints_dir(run_dir) / pointer.read_text().strip()
    if not (path / "train_state.json").is_file():
        raise UserError(f"{pointer} names {path.name}, which is incomplete; point it at an earlier "
                        "step_* directory or delete it")
    return path


def save(engine, run_dir: Path, state: TrainState, loader_state: dict, rank: int, keep_last: int) -> Path:
    """Every rank calls this; returns the final checkpoint path."""
    root = checkpoints_dir(run_dir)
    final = root / step_name(state.step)
    tmp = root / (final.name + ".tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # a leftover from a run killed mid-save
        (tmp / "rng").mkdir(parents=True)
    engine.barrier()
    engine.save(tmp)
    torch.save(_rng_state(), tmp / "rng" / f"rank_{rank:05d}.pt")
    engine.barrier()
    if rank == 0:
        write_atomic(tmp / "train_state.json",
                     json.dumps({"train": asdict(state), "loader": loader_state}, indent=1).encode())
        if final.exists():  # a re-save of the same step (after resume): replace it whole
            shutil.rmtree(final)
        tmp.rename(final)
        write_atomic(root / LATEST, final.name.encode())
        _prune(root, keep_last)
    engine.barrier()
    return final


def load(engine, path: Path, rank: int) -> tuple[TrainState, dict]:
    """Restore engine state and this rank's RNG; returns (TrainState, loader state)."""
    engine.load(path)
    meta = json.loads((path / "train_state.json").read_text())
    rng_file = path / "rng" / f"rank_{rank:05d}.pt"
    if rng_file.is_file():  # absent when resuming on more ranks than saved: fresh dropout noise there
        _set_rng_state(torch.load(rng_file, weights_only=False))
    return TrainState(**meta["train"]), meta["loader"]


def _prune(root: Path, keep_last: int) -> None:
    done = sorted(p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
    for old in done[:-keep_last]:
        shutil.rmtree(old)


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_model_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The full fp32 weights of the trained module, consolidated from the ZeRO shards of any stage."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    if not (checkpoint / "engine").is_dir():
        raise UserError(f"{checkpoint} holds no engine/ directory: it is not a complete Graft checkpoint")
    return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag="engine")
