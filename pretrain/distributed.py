"""The process side of a run: joining the process group (or becoming a world of one), and leaving."""

from __future__ import annotations

import datetime
import logging
import os
import socket
import sys

import torch

def init_distributed() -> tuple[int, int]:
    """(rank, world). Outside torchrun, becomes a world of one so the same code path runs in-process."""
    if "LOCAL_RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", str(_free_port())))
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def bound_collectives(timeout: datetime.timedelta) -> None:
    """Give every process group that exists now `timeout` for its collectives.

    `init_process_group(timeout=...)` only bounds the default group. DeepSpeed runs its collectives in groups
    of its own, made with `torch.distributed.new_group(ranks)` and no timeout (the data-parallel group is a
    clone of the world group, deepspeed/utils/groups.py `_clone_world_group`), and torch gives such a group its
    backend default, 30 minutes for gloo, whatever the default group has. Call this once DeepSpeed has made
    its groups (after `zero.Init`, after the engine is built)."""
    import torch.distributed as dist
    from torch.distributed import distributed_c10d as c10d

    if not dist.is_initialized():
        return
    for group in list(c10d._world.pg_map):  # the groups this rank is a member of
        c10d._set_pg_timeout(timeout, group)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exit_process(code: int) -> None:
    """Exit without finalizing the interpreter. Gloo's worker threads may still be releasing the tensors of
    finished collectives (a barrier keeps earlier work alive, ZeRO-3's all-gathers among it); one that needs the
    GIL once finalization has begun aborts the process ("terminate called without an active exception",
    SIGABRT) after all its work is done (how often: bench/README.md, "Other history"). Every file the run
    writes is closed by the time train() returns (callers must close theirs first); what is left to flush is
    flushed here."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
