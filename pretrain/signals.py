"""Preemption signals: SIGTERM, SIGUSR1 and SIGUSR2 (SLURM's warning before preemption or the time limit) only
raise a flag here; the trainer checks it at the next step boundary, agrees on it across ranks, checkpoints and exits
with REQUEUE_EXIT_CODE."""

from __future__ import annotations

import signal
import threading

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)  # USR2: graft slurm's default
# EX_TEMPFAIL from sysexits.h: "temporary failure, try again". The checkpoint is complete and `latest` names
# it before the process exits with this code, so a job script can requeue on it (`scontrol requeue`).
REQUEUE_EXIT_CODE = 75


class StopRequest:
    """Catches the preemption signals while active (main thread only; elsewhere it stays empty).

    The signals are also blocked in the main thread, and so in every process it starts: SLURM and torchrun
    signal every process of the job, and a DataLoader worker dies of a SIGTERM that does not come from its
    parent, which fails the rank before it can checkpoint. Blocked, a signal waits (pending) for `received`.
    Threads that do not block them run the handler instead.
    """

    def __init__(self):
        self._received: str | None = None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in PREEMPTION_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
            self._previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, PREEMPTION_SIGNALS)

    @property
    def received(self) -> str | None:
        """The name of the first preemption signal received, or None."""
        if self._previous and self._received is None:
            pending = signal.sigpending() & set(PREEMPTION_SIGNALS)
            # Takes it off the pending set without ever blocking: a thread that does not block the signal may
            # take it between the two calls (its handler then sets the flag), and sigwait would wait forever.
            taken = signal.sigtimedwait(pending, 0) if pending else None
            if taken is not None:
                self._handle(taken.si_signo, None)
        return self._received

    def _handle(self, signum, frame) -> None:
        self._received = self._received or signal.Signals(signum).name

    def close(self) -> None:
        if self._previous:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._previous_mask)  # a pending signal runs the handler
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
