"""How a failed run ends: exit codes, the message, no process left behind, and the testing aid that injects faults.

A rank that fails ends its DataLoader workers itself: they were forked while the trainer blocked the preemption
signals (pretrain/signals.py), so the SIGTERM with which multiprocessing ends them at interpreter exit never
reaches them, and the exit would wait for them forever. Under torchrun each failing rank writes a record
(`RUN_DIR/failures/rank_N.json`) before it exits, so that the launcher can name the rank that failed first and
say why, rather than the peers that only lost it.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from data_pipeline.errors import UserError

USER_ERROR_EXIT_CODE = 2  # a problem the user can fix; the message says what to do
CRASH_EXIT_CODE = 70  # EX_SOFTWARE from sysexits.h: an internal error (a bug, a killed rank, a lost peer)
FAILURES_DIR = "failures"
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
FULL_BELOW = 2**20  # bytes free under which a failed write counts as a full disk
FAULT_PLACES = ("main", "collator", "hang")


class RunFailed(Exception):
    """A run that ended with a failure already reported above; `exit_code` is what the CLI exits with."""

    def __init__(self, message: str, exit_code: int = CRASH_EXIT_CODE):
        super().__init__(message)
        self.exit_code = exit_code


def end_data_workers() -> None:
    """SIGKILL and reap this process's multiprocessing children (its DataLoader workers), which ignore SIGTERM.

    torch's SIGCHLD handler would turn their deaths into a second error in the middle of this one: it is held
    off until they are reaped."""
    children = multiprocessing.active_children()
    if not children:
        return
    previous = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        for child in children:
            child.kill()
        for child in children:
            child.join(10)
    finally:
        signal.signal(signal.SIGCHLD, previous)


def is_collective_error(exc: BaseException) -> bool:
    """A collective that failed because a peer is gone (connection closed) or stuck (timeout): a consequence."""
    import torch.distributed  # here, not at the top: `graft --help` imports this module and should not wait for torch

    dist_errors = tuple(getattr(torch.distributed, n) for n in ("DistError",) if hasattr(torch.distributed, n))
    text = str(exc)
    return isinstance(exc, dist_errors) or (isinstance(exc, RuntimeError) and any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer", "Timed out", "timed out")))


def is_timeout(exc: BaseException) -> bool:
    """A collective that waited out engine.collective_timeout_s: a peer is stuck rather than gone."""
    return is_collective_error(exc) and "timed out" in str(exc).lower()


def exit_code(exc: BaseException) -> int:
    return USER_ERROR_EXIT_CODE if isinstance(exc, UserError) else CRASH_EXIT_CODE


def report(exc: BaseException, rank: int | None = None) -> None:
    """Print the failure: a UserError as one `error:` line; a lost peer as one line; a crash with its traceback."""
    who = f"rank {rank}: " if rank is not None else ""
    if isinstance(exc, UserError):
        print(f"error: {who}{exc}", file=sys.stderr)
    elif is_collective_error(exc):
        print(f"{who}a collective failed, another rank is gone or stuck: {_one_line(exc)}", file=sys.stderr)
    else:
        traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.flush()


def crash_message(exc: BaseException) -> str:
    return f"training crashed: {_one_line(exc)} (traceback above); exit code {CRASH_EXIT_CODE}"


def _one_line(exc: BaseException) -> str:
    """Type and first line; for an error re-raised from a DataLoader worker, also the original's last line."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()] or [""]
    tail = f" {lines[-1].strip()}" if "Original Traceback" in str(exc) else ""
    return f"{type(exc).__name__}: {lines[0]}{tail}"


# --- records: how the launcher learns which rank failed first, and how ---

def clear_records(run_dir: Path) -> None:
    shutil.rmtree(run_dir / FAILURES_DIR, ignore_errors=True)


def write_record(run_dir: Path, rank: int, exc: BaseException) -> None:
    """Best effort: the run directory may be the full disk that failed the run."""
    kind = "user" if isinstance(exc, UserError) else "collective" if is_collective_error(exc) else "crash"
    message = str(exc) if kind == "user" else _one_line(exc)
    try:
        (run_dir / FAILURES_DIR).mkdir(exist_ok=True)
        (run_dir / FAILURES_DIR / f"rank_{rank:05d}.json").write_text(
            json.dumps({"rank": rank, "time": time.time(), "kind": kind, "message": message,
                        "timed_out": is_timeout(exc)}))
    except OSError:
        pass


def run_failure(run_dir: Path, world: int, torchrun_code: int) -> RunFailed | UserError:
    """What to tell the user after torchrun exited with `torchrun_code`: the first rank's own failure; else the
    ranks that ended without one (killed from outside); else the lost collective."""
    records = []
    for path in sorted((run_dir / FAILURES_DIR).glob("rank_*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    own = sorted((r for r in records if r["kind"] != "collective"), key=lambda r: r["time"])
    if own:
        first = own[0]
        if first["kind"] == "user":
            return UserError(first["message"])
        return RunFailed(f"training crashed on rank {first['rank']}: {first['message']} (traceback above); "
                         f"exit code {CRASH_EXIT_CODE}")
    silent = sorted(set(range(world)) - {r["rank"] for r in records})
    ranks = ", ".join(map(str, silent))
    waited = [r for r in records if r.get("timed_out")]
    if silent and waited:
        return RunFailed(f"rank {ranks} stopped responding: rank {waited[0]['rank']} waited for it in a collective "
                         f"until engine.collective_timeout_s ran out ({waited[0]['message']}), then torchrun "
                         f"ended rank {ranks}; exit code {CRASH_EXIT_CODE}")
    if silent and records:
        return RunFailed(f"rank {ranks} ended without an error of its own: killed from outside (SIGKILL, the "
                         "out-of-memory killer?); torchrun's line above names the signal. The other ranks "
                         f"stopped when they lost it; exit code {CRASH_EXIT_CODE}")
    if records:
        first = min(records, key=lambda r: r["time"])
        return RunFailed(f"rank {first['rank']} waited in a collective that failed: {first['message']}; a rank "
                         "was gone or stuck (engine.collective_timeout_s bounds the wait); exit code "
                         f"{CRASH_EXIT_CODE}")
    return RunFailed(f"training exited with code {torchrun_code} and no rank reported why (output above); exit "
                     f"code {CRASH_EXIT_CODE}")


# --- write errors: disk full, quota, read-only file system ---

def write_error(path: Path, exc: BaseException, needed: int | None = None, partial: Path | None = None) -> UserError:
    """The UserError for a failed write of `path`, after deleting `partial` (what the write left). torch's
    writer reports a full disk without errno ("unexpected pos", "file write failed"), so the free space at
    the moment of failure decides as well; the message gives the free space once `partial` is gone."""
    where = _existing_parent(path)
    no_space = any(getattr(e, "errno", None) in NO_SPACE for e in _chain(exc)) or \
        shutil.disk_usage(where).free < FULL_BELOW
    if partial is not None:
        shutil.rmtree(partial, ignore_errors=True)
    if no_space:
        need = f"it needs about {_size(needed)}, " if needed is not None else ""
        where = _existing_parent(path)
        return UserError(f"no space left on device writing {path} ({need}{_size(shutil.disk_usage(where).free)} "
                         f"free on {where}); free space or move train.run_dir, then continue with --resume")
    return UserError(f"could not write {path}: {_one_line(exc)}; fix the file system, then continue with --resume")


def _chain(exc: BaseException):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


# --- fault injection (train.debug_fault), a testing aid ---

@dataclass
class FaultConfig:
    # testing aid, fails the run on purpose (docs/failures.md): main (the trainer raises), collator (the collate
    # function raises), hang (the rank stops for good); null: no fault
    place: str | None = None
    step: int = 1  # the step at which it strikes
    rank: int | None = None  # only this rank; null: every rank

    def __post_init__(self):
        if self.place is not None and self.place not in FAULT_PLACES:
            raise UserError(f"train.debug_fault.place must be one of {', '.join(FAULT_PLACES)} (or null), got "
                            f"{self.place!r}")
        if self.step < 1:
            raise UserError(f"train.debug_fault.step must be >= 1, got {self.step}")

    def strikes(self, place: str, rank: int) -> bool:
        return self.place == place and self.rank in (None, rank)


def strike_in_main(fault: FaultConfig, rank: int, step: int) -> None:
    """Called before each step. A fault on one rank waits 2 s first, so that its peers already wait in the
    step's all-reduce when it strikes."""
    if step != fault.step:
        return
    if fault.strikes("main", rank):
        if fault.rank is not None:
            time.sleep(2)
        raise RuntimeError(f"train.debug_fault: deliberate failure in the main loop at step {step}")
    if fault.strikes("hang", rank):
        forced_hang()


def forced_hang() -> None:
    """Never returns (the stack files of the hang watchdog name this function)."""
    while True:
        time.sleep(1)


class FaultyCollate:
    """The objective's collate function, raising once it reaches the samples of `fault.step`."""

    def __init__(self, collate, first_sample: int):
        self.collate, self.first_sample = collate, first_sample
        self.raw_length = collate.raw_length

    def __call__(self, batch):
        if int(batch.indices.max()) >= self.first_sample:
            import torch.utils.data

            where = "a DataLoader worker" if torch.utils.data.get_worker_info() else "the main process"
            raise ValueError(f"train.debug_fault: deliberate failure in the collator ({where}) at sample "
                             f"{self.first_sample}")
        return self.collate(batch)


def with_collate_fault(collate, fault: FaultConfig, rank: int, global_batch: int):
    if not fault.strikes("collator", rank):
        return collate
    return FaultyCollate(collate, (fault.step - 1) * global_batch)


def exit_now(code: int) -> None:
    """For a rank under torchrun: end the workers, then leave without finalizing (see distributed.exit_process)."""
    from pretrain.distributed import exit_process

    end_data_workers()
    exit_process(code)
