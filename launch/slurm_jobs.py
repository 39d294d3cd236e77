"""Watching submitted runs: their last SLURM job, its state and log, cancelling it (status, logs, cancel).

Apart from launch.slurm (submitting), so that `graft slurm status|logs|cancel` start without the config and
training code (torch) that submitting needs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from data_pipeline.errors import UserError
from pretrain import checkpoint
from pretrain.metrics import read_metrics

JOBS_FILE = Path("job") / "jobs.jsonl"  # one line per submission (launch.slurm writes it)
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "DEADLINE",
            "BOOT_FAIL"}


def last_job(run_dir: Path) -> dict:
    path = Path(run_dir) / JOBS_FILE
    if not path.is_file():
        raise UserError(f"{run_dir} was not submitted with `graft slurm submit` (no {JOBS_FILE}); submit it first")
    return json.loads(path.read_text().splitlines()[-1])


def job_info(job_id: str) -> dict | None:
    """`scontrol show job` as a dict, or None once SLURM has forgotten the job (MinJobAge after its end)."""
    result = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True)
    if result.returncode != 0 or "JobState=" not in result.stdout:
        return None
    first = result.stdout.splitlines()[0]  # an array shows one line per element
    return dict(item.split("=", 1) for item in first.split() if "=" in item)


# Job states in which SLURM may still run the job (squeue's pending and running kinds).
ACTIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
                           "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT"})


def active_job(run_dir: Path) -> str | None:
    """The id of the run's last SLURM job while SLURM may still run it; None when there is none."""
    if not (Path(run_dir) / JOBS_FILE).is_file():
        return None
    job = last_job(run_dir)
    info = job_info(job["job_id"])
    return job["job_id"] if info is not None and info["JobState"] in ACTIVE_STATES else None


def status(run_dir: Path) -> str:
    """Job state, requeue count, last step and loss, last checkpoint: one line each."""
    run_dir = Path(run_dir)
    job = last_job(run_dir)
    info = job_info(job["job_id"])
    lines = [f"job {job['job_id']} (submitted {job['submitted']}): " + (
        f"{info['JobState']}, requeued {info.get('Restarts', '0')} time(s), exit code {info.get('ExitCode')}, "
        f"nodes {info.get('NodeList')}, reason {info.get('Reason')}" if info else
        "no longer known to SLURM (it ended a while ago); see its log")]
    metrics = read_metrics(run_dir) if (run_dir / "metrics.jsonl").exists() else {}
    if metrics:
        step = max(metrics)
        loss = next((metrics[s]["loss"] for s in sorted(metrics, reverse=True) if "loss" in metrics[s]), None)
        lines.append(f"last step {step}" + (f", loss {loss:.4f}" if loss is not None else ""))
    else:
        lines.append("no step logged yet")
    latest = checkpoint.latest_checkpoint(run_dir)
    lines.append(f"last checkpoint: {latest}" if latest else "no checkpoint yet")
    lines.append(f"log: {log_file(run_dir, job)}")
    return "\n".join(lines)


def log_file(run_dir: Path, job: dict | None = None) -> Path:
    job = job or last_job(run_dir)
    return Path(run_dir).resolve() / "logs" / f"slurm-{job['job_id']}.out"


def logs(run_dir: Path, follow: bool = False, out=sys.stdout) -> None:
    """Print the last job's log; with follow, keep printing what is appended until the job ends."""
    job = last_job(run_dir)
    path = log_file(run_dir, job)
    offset = 0
    while True:
        if path.exists():
            with open(path) as f:
                f.seek(offset)
                chunk = f.read()
                offset = f.tell()
            out.write(chunk)
            out.flush()
        if not follow:
            if not path.exists():
                raise UserError(f"{path} does not exist yet: the job has not started (graft slurm status "
                                f"{run_dir})")
            return
        info = job_info(job["job_id"])
        if info is None or info["JobState"] in FINISHED:
            if path.exists() and path.stat().st_size > offset:
                continue
            return
        time.sleep(1)


def cancel(run_dir: Path) -> str:
    job_id = last_job(run_dir)["job_id"]
    result = subprocess.run(["scancel", job_id], capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"scancel {job_id}: {result.stderr.strip()}")
    return job_id
