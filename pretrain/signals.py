"""Preemption signals: SIGTERM and SIGUSR1 (SLURM's warning before preemption or the time limit) only set a
flag here; the trainer checks it at the next step boundary, agrees on it across ranks, checkpoints and exits
with REQUEUE_EXIT_CODE."""

from __future__ import annotations

import signal
import threading

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# EX_TEMPFAIL from sysexits.h: "temporary failure, try again". The checkpoint is complete and `latest` names
# it before the process exits with this code, so a job script can requeue on it (`scontrol requeue`).
REQUEUE_EXIT_CODE = 75


class StopRequest:
    """Catches the preemption signals while active (main thread only; elsewhere it stays empty)."""

    def __init__(self):
        self.received: str | None = None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in PREEMPTION_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name

    def close(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
