"""torchrun as Graft starts it: `python -m launch.torchrun TORCHRUN_ARGS`.

The same launcher as `torchrun` (`torch.distributed.run.main`, with its error-file handling), except when a worker
fails: torchrun then raises ChildFailedError, and Python prints its traceback and a report box of some 30 lines
before Graft's own `error:` line. Here each failed rank gets one line (its exit code or the signal that ended
it) and torchrun exits with 1, as it would have; `launch.local.run_workers` then prints the one line that says
what happened, last.
"""

from __future__ import annotations

import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main as torchrun_main


def main(argv: list[str]) -> int:
    try:
        torchrun_main(argv)
    except ChildFailedError as exc:
        for rank, failure in sorted(exc.failures.items()):
            how = f"was ended by {failure.signal_name()}" if failure.exitcode < 0 else \
                f"exited with code {failure.exitcode}"
            print(f"torchrun: rank {rank} (pid {failure.pid}) {how}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
