"""What each rank runs under torchrun: `python -m launch.worker RUN_DIR [--resume]`."""

import sys
import warnings

from data_pipeline.errors import UserError
from pretrain.distributed import exit_process
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


if __name__ == "__main__":
    exit_process(main(sys.argv[1:]))
