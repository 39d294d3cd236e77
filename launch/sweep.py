"""`graft sweep`: one run per point, each in SWEEP_DIR/runs/NAME, recorded in SWEEP_DIR/sweep.json.

    SWEEP_DIR/
      sweep.json        the config, its overrides and every point (overrides, budget, FLOPs per sample, params)
      runs/NAME/        an ordinary run directory (`graft train`'s)
      logs/NAME.log     the output of that point's training

Re-running the same command skips finished points (summary.json says the run reached train.max_steps),
resumes those with a checkpoint (--resume), and starts the rest afresh. A point that fails does not stop the
others; the sweep ends with an error naming each failed point and its log.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from data_pipeline.errors import UserError
from data_pipeline.shards import write_atomic
from launch.slurm import resume as resume_slurm
from launch.slurm import submit_array
from launch.slurm_jobs import active_job
from launch.slurm_script import SlurmOptions
from launch.sweep_plan import Point, edge_warnings, measure, point_config
from pretrain import checkpoint
from pretrain.metrics import SUMMARY_FILE

SWEEP_FILE = "sweep.json"
BACKENDS = ("local", "slurm")


def run_dir_of(sweep_dir: Path, point: Point) -> Path:
    return sweep_dir / "runs" / point.name


def point_status(run_dir: Path) -> str:
    """finished | resume (a complete checkpoint) | new (nothing, or a start that wrote no checkpoint)."""
    summary = run_dir / SUMMARY_FILE
    if summary.is_file():
        record = json.loads(summary.read_text())
        if record.get("stopped_by") == "end" and record.get("step") == record.get("max_steps"):
            return "finished"
    return "resume" if checkpoint.latest_checkpoint(run_dir) is not None else "new"


def plan_sweep(config: str, overrides: list[str], points: list[Point], sweep_dir: Path) -> list[Point]:
    """Measure the points and write (or check against) SWEEP_DIR/sweep.json; returns the points to run."""
    if not points:
        raise UserError("graft sweep needs --grid KEY=V1,V2 or --isoflop BUDGETS --sizes PRESETS")
    if len({p.name for p in points}) != len(points):
        raise UserError("two grid points have the same name; give each --grid key distinct values")
    first = point_config(config, overrides, points[0])
    if first.train.eval_data is None:
        raise UserError(f"{config}: train.eval_data is not set; graft scaling fits each run's final held-out loss, "
                        "so pass train.eval_data=HELDOUT_DIR (a `graft prepare --tokenizer ...` of held-out text)")
    measure(config, overrides, points)
    for warning in edge_warnings(config, overrides, points):
        print(f"warning: {warning}")
    record = {"version": 1, "config": str(Path(config).resolve()), "overrides": list(overrides),
              "points": [dataclasses.asdict(p) for p in points]}
    manifest = sweep_dir / SWEEP_FILE
    if manifest.is_file():
        old = json.loads(manifest.read_text())
        mine = {k: record[k] for k in ("config", "overrides")} | {"points": [p["overrides"] for p in record["points"]]}
        theirs = {k: old.get(k) for k in ("config", "overrides")} | \
            {"points": [p["overrides"] for p in old.get("points", [])]}
        if mine != theirs:
            differs = ", ".join(k for k in mine if mine[k] != theirs[k])
            raise UserError(f"{manifest} records another sweep (its {differs} differ); re-run that sweep's own "
                            "command, or pass --out NEW_DIR for this one")
    else:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(manifest, (json.dumps(record, indent=1) + "\n").encode())
    return points


def read_sweep(sweep_dir: Path) -> dict:
    path = sweep_dir / SWEEP_FILE
    if not path.is_file():
        raise UserError(f"{sweep_dir} holds no {SWEEP_FILE}; is it the --out of a `graft sweep`?")
    return json.loads(path.read_text())


def run_sweep(config: str, overrides: list[str], points: list[Point], sweep_dir: Path, backend: str = "local",
              nproc: int = 1) -> dict[str, str]:
    """Plan, then train every unfinished point; returns point name -> finished | trained | resumed | failed."""
    if backend not in BACKENDS:
        raise UserError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    points = plan_sweep(config, overrides, points, sweep_dir)
    status = {p.name: point_status(run_dir_of(sweep_dir, p)) for p in points}
    todo = [p for p in points if status[p.name] != "finished"]
    print(f"sweep {sweep_dir}: {len(points)} points, {len(points) - len(todo)} finished, {len(todo)} to train")
    if backend == "slurm":
        _submit_slurm(config, overrides, todo, sweep_dir, status, nproc)
        return status
    outcome = {p.name: "finished" for p in points if status[p.name] == "finished"}
    for point in tqdm(todo, desc="sweep", unit=" runs"):
        outcome[point.name] = _train_locally(config, overrides, point, sweep_dir, status[point.name], nproc)
    failed = [name for name, result in outcome.items() if result == "failed"]
    if failed:
        raise UserError(f"{len(failed)} of {len(points)} sweep points failed: "
                        + ", ".join(f"{n} (log: {sweep_dir / 'logs' / (n + '.log')})" for n in failed)
                        + "; fix the cause and re-run the same command (finished points are skipped)")
    return outcome


def train_command(config: str, overrides: list[str], point: Point, sweep_dir: Path, resume: bool,
                  nproc: int) -> list[str]:
    """The `graft train` command line of one point (the local backend runs it; a job array task would too)."""
    run_dir = run_dir_of(sweep_dir, point)
    return [sys.executable, "-m", "launch.cli", "train", config, *overrides, *point.overrides,
            f"train.run_dir={run_dir}", "--nproc", str(nproc), *(["--resume"] if resume else [])]


def set_aside_failed_start(run_dir: Path) -> None:
    """A start that died before its first checkpoint left files but nothing to resume: keep them aside (renamed
    NAME.failed-TIME) so that the point starts afresh."""
    if run_dir.exists():
        run_dir.rename(run_dir.with_name(f"{run_dir.name}.failed-{int(time.time())}"))


def _train_locally(config: str, overrides: list[str], point: Point, sweep_dir: Path, status: str,
                   nproc: int) -> str:
    run_dir = run_dir_of(sweep_dir, point)
    if status == "new":
        set_aside_failed_start(run_dir)
    log = sweep_dir / "logs" / f"{point.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "a") as out:
        result = subprocess.run(train_command(config, overrides, point, sweep_dir, status == "resume", nproc),
                                stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    if result.returncode != 0 or point_status(run_dir) != "finished":
        tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
        tqdm.write(f"FAILED {point.name} (exit code {result.returncode}): {tail[0]}")
        return "failed"
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    tqdm.write(f"{'resumed' if status == 'resume' else 'trained'} {point.name} in {time.monotonic() - start:.0f} s: "
               f"final held-out loss {summary.get('final_eval_loss')}")
    return "resumed" if status == "resume" else "trained"


def _submit_slurm(config: str, overrides: list[str], todo: list[Point], sweep_dir: Path, status: dict[str, str],
                  nproc: int) -> None:
    """One SLURM job array, an element per new point, each in its own run directory (`launch.slurm`); a point
    with a checkpoint already continues as `graft slurm submit --resume` would (its own job); a point that
    failed before its first checkpoint starts afresh in the array, its old files set aside."""
    if not todo:
        print(f"nothing to submit: every point has finished; fit it with: graft scaling {sweep_dir} --out "
              f"{sweep_dir / 'scaling'}")
        return
    running = {p.name: job for p in todo if (job := active_job(run_dir_of(sweep_dir, p))) is not None}
    for name, job in running.items():
        print(f"{name}: SLURM job {job} is still queued or running; left to it")
    todo = [p for p in todo if p.name not in running]
    for point in [p for p in todo if status[p.name] == "resume"]:
        job = resume_slurm(run_dir_of(sweep_dir, point), [], {})
        print(f"resubmitted {point.name} to continue from its checkpoint: SLURM job {job}")
    todo = [p for p in todo if status[p.name] == "new"]
    if not todo:
        return
    for point in todo:
        set_aside_failed_start(run_dir_of(sweep_dir, point))
    run_dirs = [run_dir_of(sweep_dir, p) for p in todo]
    configs = [point_config(config, overrides, p) for p in todo]
    job = submit_array(configs, run_dirs, SlurmOptions(procs_per_node=nproc))
    print(f"submitted {len(todo)} points as SLURM job array {job}; `graft slurm status {run_dirs[0]}` follows the "
          "first; re-run this command when the array ends to fit or resubmit what did not finish")
