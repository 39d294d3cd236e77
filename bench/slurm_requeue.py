"""Graft's own cost of a preemption on SLURM, on a cluster this script starts (tests/slurm/cluster.py; as root).

One job (1 node x 2 CPU processes, the tiny BERT). Its first start is a plain one: the baseline is the time
from the job's first log line to its first training step. After a few steps it gets USR2 (`scancel --signal
--batch`, what `--signal=B:USR2@T` does before a time limit); Graft's cost is the time from the signal until the
job has exited with its checkpoint, plus the time from the requeued job's start until its first step. The
baseline and the restart are a minute apart in the same job, so a busy machine's load drifts little between
them (a separate baseline job, run before, gave 1.12 and 1.48 on the same code). SLURM's own wait between the
exit and the restart is the cluster's setting (cred_expire=10 here) and is reported apart.

Figures, last line: requeue_overhead_ratio = Graft's cost / the baseline's start-up (goal <= 1.5),
requeue_lost_steps = steps trained twice (goal 0), requeue_slurm_wait_s.

Run (as root): PYTHONPATH=$PWD python bench/slurm_requeue.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests" / "slurm"))


def _when(predicate, timeout: float = 300, poll: float = 0.05) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(poll)
    raise TimeoutError("timed out waiting")


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _steps(run_dir: Path) -> list[int]:
    """Every logged step in order, repeats included (a resumed run re-logs steps after its checkpoint)."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line)["step"] for line in lines if line.strip()]


def _submit(cluster, data: Path, run_dir: Path, steps: int) -> tuple[str, Path]:
    cmd = [sys.executable, "-m", "launch.cli", "slurm", "submit", str(REPO_ROOT / "configs" / "tiny.yaml"),
           f"data.path={data}", f"train.run_dir={run_dir}", f"train.max_steps={steps}", "train.save_every=1000",
           "train.log_every=1", "--nodes", "1", "--procs-per-node", "2"]
    out = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, check=True, cwd=REPO_ROOT).stdout
    job = out.split()[2].rstrip(":")
    return job, run_dir / "logs" / f"slurm-{job}.out"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="steps of the job (default: %(default)s)")
    parser.add_argument("--signal-at", type=int, default=5, help="signal after this step (default: %(default)s)")
    args = parser.parse_args()

    from bench.common import prepared_corpus
    from cluster import start_cluster

    work = Path(tempfile.mkdtemp(prefix="graft-bench-requeue-"))
    data = prepared_corpus(work, 0, 150, vocab_size=2000)
    cluster = start_cluster(num_nodes=1)
    try:
        run_dir = work / "preempted"
        job, log = _submit(cluster, data, run_dir, args.steps)
        started = _when(lambda: "(restart 0)" in _text(log))
        first = _when(lambda: len(_steps(run_dir)) >= 1)
        startup = first - started
        _when(lambda: len(_steps(run_dir)) >= args.signal_at)
        signalled = time.monotonic()
        cluster.slurm("scancel", "--signal=USR2", "--batch", job)
        exited = _when(lambda: "graft: checkpointed; requeueing" in _text(log))
        before = len(_steps(run_dir))
        restarted = _when(lambda: "(restart 1)" in _text(log))
        resumed = _when(lambda: len(_steps(run_dir)) > before)
        info = cluster.wait_job(job)
        assert info["JobState"] == "COMPLETED", _text(log)
        steps = _steps(run_dir)
        lost = len(steps) - len(set(steps))
    finally:
        cluster.stop()
    graft_cost = (exited - signalled) + (resumed - restarted)
    print(f"plain start to first step {startup:.2f} s; signal -> exited with checkpoint "
          f"{exited - signalled:.2f} s; requeued start -> first step {resumed - restarted:.2f} s; "
          f"SLURM's wait {restarted - exited:.2f} s")
    print(json.dumps({"requeue_overhead_ratio": round(graft_cost / startup, 3), "requeue_lost_steps": lost,
                      "requeue_slurm_wait_s": round(restarted - exited, 2)}))


if __name__ == "__main__":
    main()
