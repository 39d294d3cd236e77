"""torchrun without its traceback: `python -m launch.torchrun ARGS` runs `torchrun ARGS` (launch/local.py's ranks).

When ranks fail, torchrun raises ChildFailedError and prints its Python traceback and a report of every failed
rank. Ranks that exited with a code of their own have said why already (a UserError as one `error:` line, a crash
with its traceback: pretrain/failures.py), and the launcher then names the rank that failed first: torchrun's
traceback and report would only bury that line. A rank killed by a signal said nothing: for it torchrun's report
(which rank, which signal) is printed, still without the traceback.
"""

from __future__ import annotations

import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run


def main(argv: list[str]) -> int:
    try:
        run(parse_args(argv))
    except ChildFailedError as exc:
        if any(failure.exitcode < 0 for failure in exc.failures.values()):  # killed by a signal
            print(exc.format_msg(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
