"""What each rank runs under torchrun: `python -m launch.worker RUN_DIR [--resume]`."""

import logging
import os
import sys
import warnings

from data_pipeline.errors import UserError
from pretrain.signals import REQUEUE_EXIT_CODE
from pretrain.trainer import train


def main(argv: list[str]) -> int:
    from pathlib import Path

    # DeepSpeed calls torch.distributed functions that warn once per call site and rank: noise to users.
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")

    run_dir, resume = Path(argv[0]), "--resume" in argv[1:]
    try:
        outcome = train(run_dir, resume=resume)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return REQUEUE_EXIT_CODE if outcome.stopped_by.startswith("signal") else 0


def leave(code: int) -> None:
    """Exit without finalizing the interpreter. Gloo's worker threads may still be releasing the tensors of
    finished collectives (a barrier keeps earlier work alive, ZeRO-3's all-gathers among it); one that needs the
    GIL once finalization has begun aborts the process ("terminate called without an active exception",
    SIGABRT) after all its work is done: 1 run in 7 with the CPU busy. Every file the run writes is closed by
    the time train() returns; what is left to flush is flushed here."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    leave(main(sys.argv[1:]))
