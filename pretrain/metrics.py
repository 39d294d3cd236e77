"""Where training figures go: TensorBoard scalars, `metrics.jsonl` (one JSON object per logged step), the
console, and `summary.json` at the end of a run; and the window meter that turns steps into rates."""

from __future__ import annotations

import json
import time
from pathlib import Path

from pretrain.run_dir import METRICS_FILE, SUMMARY_FILE, TENSORBOARD_DIR



class MetricsLog:
    """Writes only on the main rank; a no-op elsewhere, so callers need no rank checks."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.enabled = enabled
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(run_dir / TENSORBOARD_DIR))
            self.jsonl = open(run_dir / METRICS_FILE, "a")

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


class WindowMeter:
    """Rates over the steps since the last report: tokens/s, samples/s, TFLOP/s and MFU per rank, data wait."""

    def __init__(self, peak_flops: float | None):
        self.peak_flops = peak_flops
        self.run_start = time.perf_counter()
        self.run_tokens = self.run_flops = 0.0
        self._reset()

    def _reset(self) -> None:
        self.start = time.perf_counter()
        self.tokens = self.samples = self.flops = self.data_wait = 0.0

    def add(self, tokens: int, samples: int, rank_flops: float, data_wait: float) -> None:
        self.tokens += tokens
        self.samples += samples
        self.flops += rank_flops
        self.data_wait += data_wait
        self.run_tokens += tokens
        self.run_flops += rank_flops

    def report(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.start
        rates = {"tokens_per_s": self.tokens / elapsed, "samples_per_s": self.samples / elapsed,
                 "tflops_per_rank": self.flops / elapsed / 1e12, "data_wait_frac": self.data_wait / elapsed}
        if self.peak_flops:
            rates["mfu"] = self.flops / elapsed / self.peak_flops
        self._reset()
        return rates

    def run_rates(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.run_start
        rates = {"wall_s": elapsed, "tokens_per_s": self.run_tokens / elapsed}
        if self.peak_flops:
            rates["mfu"] = self.run_flops / elapsed / self.peak_flops
        return rates


def console_line(step: int, scalars: dict[str, float]) -> str:
    return f"step {step:>6}  " + "  ".join(f"{k} {v:.4g}" for k, v in scalars.items())


def write_summary(run_dir: Path, summary: dict) -> None:
    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")


def read_metrics(run_dir: Path) -> dict[int, dict]:
    """step -> its logged values, the latest of each (a resumed run re-logs the steps after its checkpoint)."""
    records = {}
    with open(run_dir / METRICS_FILE) as f:
        for line in f:
            record = json.loads(line)
            records[record["step"]] = {**records.get(record["step"], {}), **record}
    return records
