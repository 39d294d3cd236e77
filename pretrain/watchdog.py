"""Hang watchdog (train.hang_timeout_minutes): a rank on which no step completes within the timeout writes the
Python stacks of all its threads to RUN_DIR/hang/ and exits with the requeue code.

A hung collective blocks every rank, so every rank's watchdog fires (each runs in a thread of its own, which a
rank blocked in gloo or NCCL does not stop): the run directory then holds one stack file per rank, naming the
line each was stuck on, and the job is requeued to resume from its last checkpoint instead of burning its
allocation silently.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time
from pathlib import Path

from pretrain.signals import REQUEUE_EXIT_CODE

HANG_DIR = "hang"


def stack_file(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / HANG_DIR / f"stacks-rank{rank}.txt"


class HangWatchdog:
    """`start()` once the rank knows its config, `beat()` after each step (and after other long work between
    steps); `close()` at the end, also when training raised. A timeout of 0 turns it off."""

    def __init__(self, run_dir: Path):
        self._run_dir = Path(run_dir)
        self._done = threading.Event()
        self._thread = None

    def start(self, rank: int, timeout_minutes: float) -> None:
        self._rank, self._timeout = rank, timeout_minutes * 60
        self._last = time.monotonic()
        if self._timeout > 0:
            self._thread = threading.Thread(target=self._watch, name="graft-hang-watchdog", daemon=True)
            self._thread.start()

    def beat(self) -> None:
        self._last = time.monotonic()

    def close(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        while not self._done.wait(min(10.0, self._timeout / 4)):
            idle = time.monotonic() - self._last
            if idle >= self._timeout:
                self._fire(idle)

    def _fire(self, idle: float) -> None:
        path = stack_file(self._run_dir, self._rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as out:
            out.write(f"rank {self._rank}: no training step completed for {idle:.0f} s "
                      f"(train.hang_timeout_minutes={self._timeout / 60:g}); stacks of all threads:\n")
            out.flush()
            faulthandler.dump_traceback(out, all_threads=True)
        print(f"error: rank {self._rank}: no step completed in {idle:.0f} s (train.hang_timeout_minutes); "
              f"Python stacks written to {path}; exiting with code {REQUEUE_EXIT_CODE} so the job is requeued "
              "and resumes from its last checkpoint", file=sys.stderr, flush=True)
        os._exit(REQUEUE_EXIT_CODE)
