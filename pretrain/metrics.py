"""Where training figures go: TensorBoard scalars and `metrics.jsonl` (one JSON object per logged step)."""

from __future__ import annotations

import json
from pathlib import Path


class MetricsLog:
    """Writes only on the main rank; a no-op elsewhere, so callers need no rank checks."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.enabled = enabled
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))
            self.jsonl = open(run_dir / "metrics.jsonl", "a")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in scalars.items():
            self.tensorboard.add_scalar(name, value, step)
        self.jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self.jsonl.flush()

    def close(self) -> None:
        if self.enabled:
            self.tensorboard.close()
            self.jsonl.close()


def read_metrics(run_dir: Path) -> dict[int, dict]:
    """step -> its last logged record (a resumed run re-logs the steps after its checkpoint)."""
    records = {}
    with open(run_dir / "metrics.jsonl") as f:
        for line in f:
            record = json.loads(line)
            records[record["step"]] = record
    return records
