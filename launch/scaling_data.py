"""The data of a scaling fit: one `Run` per finished run, from a sweep directory, run directories or a CSV;
every run left out is named with the reason (not finished, diverged, no held-out loss)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from data_pipeline.errors import UserError
from launch.model_size import count_parameters
from launch.sweep import SWEEP_FILE, read_sweep
from launch.sweep_plan import sample_batches
from pretrain.config import load_config
from pretrain.flops import batch_flops
from pretrain.metrics import SUMMARY_FILE
from pretrain.models.config import ModelConfig
from pretrain.objectives import reads_logits_only
from pretrain.run_dir import CONFIG_FILE

CSV_REQUIRED = ("params", "tokens", "loss")
CSV_OPTIONAL = ("name", "flops", "non_embedding_params", "budget")


@dataclass
class Run:
    name: str
    params: float  # total parameters
    non_embedding_params: float
    tokens: float  # tokens trained on
    flops: float  # training FLOPs
    loss: float  # final held-out loss
    budget: float | None = None  # the IsoFLOP budget it was planned for, if any


def collect(inputs: list[str]) -> tuple[list[Run], list[tuple[str, str]]]:
    """(runs, [(name, why it was left out)]) over every input."""
    runs, left_out = [], []
    for item in inputs:
        path = Path(item)
        if path.suffix == ".csv" and path.is_file():
            got, out = read_csv(path)
        elif (path / SWEEP_FILE).is_file():
            got, out = read_sweep_runs(path)
        elif (path / CONFIG_FILE).is_file():
            got, out = [], []
            run = read_run_dir(path, path.name, None, None, out)
            got += [run] if run else []
        else:
            raise UserError(f"{item} is neither a results CSV, a sweep directory ({SWEEP_FILE}) nor a run directory "
                            f"({CONFIG_FILE})")
        runs += got
        left_out += out
    return runs, left_out


def read_sweep_runs(sweep_dir: Path) -> tuple[list[Run], list[tuple[str, str]]]:
    record = read_sweep(sweep_dir)
    runs, left_out = [], []
    for point in record["points"]:
        run = read_run_dir(sweep_dir / "runs" / point["name"], point["name"], point.get("budget"),
                           point.get("flops_per_sample"), left_out)
        if run:
            runs.append(run)
    return runs, left_out


def read_run_dir(run_dir: Path, name: str, budget: float | None, flops_per_sample: float | None,
                 left_out: list) -> Run | None:
    if not (run_dir / CONFIG_FILE).is_file():
        left_out.append((name, "not started (no run directory)"))
        return None
    summary_file = run_dir / SUMMARY_FILE
    if not summary_file.is_file():
        bad = _nonfinite_step(run_dir)
        left_out.append((name, f"diverged (non-finite loss at step {bad}, no summary.json)" if bad is not None else
                         "not finished (no summary.json: still training, or stopped by an error)"))
        return None
    summary = json.loads(summary_file.read_text())
    if summary.get("stopped_by") != "end" or summary.get("step") != summary.get("max_steps"):
        left_out.append((name, f"not finished (step {summary.get('step')} of {summary.get('max_steps')}, stopped by "
                               f"{summary.get('stopped_by')}); resume it"))
        return None
    loss = summary.get("final_eval_loss")
    if loss is None:
        left_out.append((name, "no final held-out loss (train.eval_data was not set)"))
        return None
    if not math.isfinite(loss):
        left_out.append((name, f"diverged (final held-out loss {loss})"))
        return None
    raw = OmegaConf.to_container(OmegaConf.load(run_dir / CONFIG_FILE))
    counts = count_parameters(ModelConfig(**raw["model"]))
    samples = summary["step"] * raw["engine"]["global_batch_size"]
    if flops_per_sample is None:
        flops_per_sample = _measured_flops_per_sample(run_dir)
    flops = samples * flops_per_sample if flops_per_sample else 6.0 * counts.total * summary["tokens"]
    return Run(name, counts.total, counts.non_embedding, summary["tokens"], flops, loss, budget)


def _measured_flops_per_sample(run_dir: Path) -> float | None:
    """Graft's FLOPs count on the run's own batches, where its dataset is still there; else None (6ND)."""
    try:
        cfg = load_config(run_dir / CONFIG_FILE)
        batches = sample_batches(cfg)
    except (UserError, OSError):
        print(f"note: {run_dir}: its dataset cannot be read; its FLOPs are taken as 6 * params * tokens")
        return None
    samples = sum(b["input_ids"].shape[0] for b in batches)
    return batch_flops(cfg.model, batches, reads_logits_only(cfg.objective)) / samples


def _nonfinite_step(run_dir: Path) -> int | None:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return None
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        if any(isinstance(record.get(k), float) and not math.isfinite(record[k]) for k in ("loss", "eval_loss")):
            return record["step"]
    return None


def read_csv(path: Path) -> tuple[list[Run], list[tuple[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or ())
        missing = [c for c in CSV_REQUIRED if c not in columns]
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(missing)}; a results CSV needs params, tokens, "
                            f"loss (and optionally {', '.join(CSV_OPTIONAL)})")
        rows = list(reader)
    runs, left_out = [], []
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        name = row.get("name") or f"{path.name}:{i}"
        try:
            params, tokens = float(row["params"]), float(row["tokens"])
            loss = float(row["loss"]) if (row["loss"] or "").strip() else None
            flops = float(row["flops"]) if (row.get("flops") or "").strip() else 6.0 * params * tokens
            non_embedding = float(row["non_embedding_params"]) if (row.get("non_embedding_params") or "").strip() \
                else params
            budget = float(row["budget"]) if (row.get("budget") or "").strip() else None
        except ValueError as exc:
            raise UserError(f"{path} line {i}: {exc}; the columns hold numbers") from None
        if loss is None:
            left_out.append((name, "missing final loss"))
        elif not math.isfinite(loss):
            left_out.append((name, f"diverged (loss {row['loss']})"))
        elif min(params, tokens, flops, loss) <= 0:
            left_out.append((name, "non-positive params, tokens, flops or loss"))
        else:
            runs.append(Run(name, params, non_embedding, tokens, flops, loss, budget))
    return runs, left_out


def write_csv(runs: list[Run], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "params", "non_embedding_params", "tokens", "flops", "loss", "budget"])
        for r in runs:
            writer.writerow([r.name, r.params, r.non_embedding_params, r.tokens, r.flops, r.loss,
                             "" if r.budget is None else r.budget])
