"""What each rank runs under torchrun: `python -m launch.worker RUN_DIR [--resume]`."""

import os
import sys
import warnings
from pathlib import Path

from pretrain.failures import exit_code, exit_now, report, write_record
from pretrain.signals import REQUEUE_EXIT_CODE
from pretrain.trainer import train


def main(argv: list[str]) -> int:
    # DeepSpeed calls torch.distributed functions that warn once per call site and rank: noise to users.
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")

    run_dir, resume = Path(argv[0]), "--resume" in argv[1:]
    try:
        outcome = train(run_dir, resume=resume)
    except BaseException as exc:  # noqa: B036 — any failure, KeyboardInterrupt included, ends this rank now
        rank = int(os.environ.get("RANK", "0"))
        report(exc, rank)
        write_record(run_dir, rank, exc)  # so the launcher can name the rank that failed first
        return exit_code(exc)
    return REQUEUE_EXIT_CODE if outcome.stopped_by.startswith("signal") else 0


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
