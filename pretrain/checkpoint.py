"""Checkpoint directories: atomic writes, a `latest` pointer, keep-last-K, and reading weights back.

The layout of `checkpoints/` is `pretrain.run_dir`'s.
A checkpoint is written as `step_XXXXXXXX.tmp`, `train_state.json` last, and renamed once every rank has
finished; only then does `latest` (replaced atomically) name it. So `latest` only ever names complete
checkpoints, and a kill at any moment leaves the previous one intact.

torch and numpy are imported where weights and RNG states are written or read: the launcher and `graft slurm
status` only find checkpoints and read their train_state.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from data_pipeline.errors import UserError
from data_pipeline.dataset_files import write_atomic
from pretrain.failures import is_collective_error, write_error
from pretrain.run_dir import (ENGINE_DIR, LATEST, TRAIN_STATE_FILE, checkpoints_dir, rng_file,  # noqa: F401
                              step_name)
from pretrain.universal import convert_to_universal

if TYPE_CHECKING:
    import torch


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done (skipped ones included: they consumed their data)
    tokens: int = 0  # tokens fed to the model so far
    skipped: int = 0  # steps not applied: non-finite loss, or an fp16 overflow
    nonfinite_streak: int = 0  # non-finite losses in a row up to `step`


def checkpoint_at(run_dir: Path, step: int) -> Path:
    """The complete checkpoint of `step`; a clear error listing the complete ones when there is none."""
    path = checkpoints_dir(run_dir) / step_name(step)
    if not (path / TRAIN_STATE_FILE).is_file():
        complete = sorted(int(p.name.split("_")[1]) for p in checkpoints_dir(run_dir).glob("step_*[0-9]")
                          if (p / TRAIN_STATE_FILE).is_file())  # none when there is no checkpoints dir
        raise UserError(f"{run_dir} has no complete checkpoint of step {step}; it has "
                        + (", ".join(map(str, complete)) or "none") + " (train.keep_last sets how many are kept)")
    return path


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = checkpoints_dir(run_dir) / LATEST
    if not pointer.is_file():
        return None
    path = checkpoints_dir(run_dir) / pointer.read_text().strip()
    if not (path / TRAIN_STATE_FILE).is_file():
        raise UserError(f"{pointer} names {path.name}, which is incomplete; point it at an earlier "
                        "step_* directory or delete it")
    return path


def read_meta(path: Path) -> dict:
    """train_state.json: {"train": TrainState, "loader": ..., "reason": ..., "world_size": ..., "model": ...}."""
    return json.loads((path / TRAIN_STATE_FILE).read_text())


def save(engine, run_dir: Path, state: TrainState, loader_state: dict, rank: int, keep_last: int,
         reason: str = "periodic", model: dict | None = None, memory=None) -> Path:
    """Every rank calls this; returns the final checkpoint path. `reason` is recorded (e.g. "signal SIGTERM"),
    and `model`, the model config the weights belong to (export checks the run's config.yaml against it);
    `memory`, a recurrent run's `pretrain.recurrence.LaneMemory`, saves this rank's lanes."""
    import torch

    root = checkpoints_dir(run_dir)
    final = root / step_name(state.step)
    tmp = root / (final.name + ".tmp")
    latest = root / LATEST
    # The checkpoint `latest` names is never deleted; the trainer does not re-save the step it resumed from.
    assert not (latest.is_file() and latest.read_text().strip() == final.name), f"{final} is `latest`"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # a leftover from a run killed mid-save
        rng_file(tmp, rank).parent.mkdir(parents=True)
    engine.barrier()
    with _writing(tmp, engine, root):
        engine.save(tmp)
        if memory is not None:
            memory.save(tmp, rank)
        torch.save(_rng_state(), rng_file(tmp, rank))
    engine.barrier()
    if rank == 0:
        with _writing(tmp, engine, root):
            write_atomic(tmp / TRAIN_STATE_FILE,
                         json.dumps({"train": asdict(state), "loader": loader_state, "reason": reason,
                                     "world_size": engine.world, "model": model}, indent=1).encode())
        if final.exists():  # complete but never `latest` (killed before the pointer moved): replace it whole
            shutil.rmtree(final)
        tmp.rename(final)
        _fsync_dir(root)
        write_atomic(latest, final.name.encode())
        _prune(root, keep_last)
    engine.barrier()
    return final


@contextlib.contextmanager
def _writing(tmp: Path, engine, root: Path):
    """A failed write (full disk, quota, read-only) becomes a UserError naming `tmp`, which is deleted:
    `latest` still names the last complete checkpoint. A failed collective stays what it is."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        if is_collective_error(exc):
            raise
        raise write_error(tmp, exc, needed=_checkpoint_bytes(engine, root), partial=tmp) from exc


def _checkpoint_bytes(engine, root: Path) -> int:
    """About what one checkpoint takes: the newest complete one's size, else fp32 weights, master copy and
    Adam's two moments (16 bytes a parameter)."""
    done = sorted(p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
    if done:
        return sum(f.stat().st_size for f in done[-1].rglob("*") if f.is_file())
    return 16 * engine.num_params


def load(engine, path: Path, rank: int, memory=None) -> tuple[TrainState, dict]:
    """Restore engine state and this rank's RNG; returns (TrainState, loader state).

    An engine built with `load_universal` (the world size changed) reads `path/universal`, which rank 0
    converts from `path/engine` here the first time.
    """
    from pretrain import safe_load

    if engine.ds_config["checkpoint"]["load_universal"]:
        if rank == 0:
            convert_to_universal(path)
        engine.barrier()
    engine.load(path)
    meta = read_meta(path)
    saved_rng = rng_file(path, rank)
    if saved_rng.is_file():  # absent when resuming on more ranks than saved: fresh dropout noise there
        _set_rng_state(safe_load.load(saved_rng))
    if memory is not None:
        memory.load(path, engine.device)
    return TrainState(**meta["train"]), meta["loader"]


def remove_partial(run_dir: Path) -> None:
    """Delete `step_*.tmp` directories: checkpoints whose writing was interrupted (never named by `latest`)."""
    for partial in checkpoints_dir(run_dir).glob("step_*.tmp"):
        shutil.rmtree(partial, ignore_errors=True)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable before anything points at its result."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(root: Path, keep_last: int) -> None:
    done = sorted(p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
    for old in done[:-keep_last]:
        shutil.rmtree(old)


def _rng_state() -> dict:
    import numpy as np
    import torch

    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_model_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The full fp32 weights of the trained module (tied aliases included), from the ZeRO shards of any stage,
    ZeRO 0 too (whose checkpoint DeepSpeed's `zero_to_fp32` cannot read), through export's reader."""
    from pretrain.zero_checkpoint import ZeroCheckpoint

    if not (checkpoint / ENGINE_DIR).is_dir():
        raise UserError(f"{checkpoint} holds no engine/ directory: it is not a complete Graft checkpoint")
    reader = ZeroCheckpoint(checkpoint / ENGINE_DIR)
    weights = {name: reader.tensor(name) for name in reader.shapes}
    weights.update({alias: weights[source] for alias, source in reader.shared.items()})
    return weights
