"""Submitting training runs to SLURM, and watching them: submit, submit_array, resume, status, logs, cancel.

Each submission leaves in the run directory: train.sbatch (the script submitted), logs/slurm-JOBID.out (all
nodes' output, appended across requeues), and job/N/ (a snapshot: the resolved config, the script, the code
version with its uncommitted diff, the installed packages, the options), and a line in job/jobs.jsonl.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from data_pipeline.errors import UserError
from launch.local import prepare_run_dir
from launch.slurm_script import SlurmOptions, render
from pretrain import checkpoint
from pretrain.config import RunConfig, check_special_ids, load_config
from pretrain.metrics import read_metrics
from pretrain.trainer import CONFIG_FILE

SCRIPT_FILE = "train.sbatch"
JOBS_FILE = Path("job") / "jobs.jsonl"
CODE_ROOT = Path(__file__).resolve().parent.parent
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "DEADLINE",
            "BOOT_FAIL"}


def submit(config: str, overrides: list[str], options: SlurmOptions, dry_run: bool = False) -> tuple[Path, str]:
    """Set up a new run directory for CONFIG + overrides and submit it; returns (run dir, job id).
    With dry_run, returns (run dir, the script) and writes nothing."""
    cfg = load_config(config, overrides)
    if dry_run:
        _check(cfg, options)
        return Path(cfg.train.run_dir), _script([Path(cfg.train.run_dir)], options)
    return Path(cfg.train.run_dir), submit_array([cfg], [Path(cfg.train.run_dir)], options)


def submit_array(configs: list[RunConfig], run_dirs: list[Path], options: SlurmOptions) -> str:
    """Submit one SLURM job for several runs: a job array whose element i trains configs[i] in run_dirs[i] (its
    own run directory, checkpoints, logs and requeues), each on `options.nodes` nodes. A single config makes a
    plain job. Every config is checked and every run directory set up (it must not hold a run yet) before
    anything is submitted. Returns the job id (the array's; element i is "ID_i" in SLURM's terms, and its run
    directory's job/jobs.jsonl records that). Raises UserError for bad input or when sbatch refuses."""
    if len(configs) != len(run_dirs) or not configs:
        raise UserError(f"submit_array: {len(configs)} configs for {len(run_dirs)} run directories")
    configs = [dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, run_dir=str(Path(d).resolve())))
               for cfg, d in zip(configs, run_dirs, strict=True)]
    for cfg in configs:
        _check(cfg, options)
    run_dirs = [prepare_run_dir(cfg, resume=False) for cfg in configs]
    return _submit(run_dirs, options, resumed=False)


def resume(run_dir: Path, overrides: list[str], changes: dict) -> str:
    """Submit the run in `run_dir` again, to continue from its latest checkpoint: the options of its last
    submission with `changes` applied (e.g. {"nodes": 2}); the checkpoint's world size is converted."""
    run_dir = Path(run_dir).resolve()
    last = last_job(run_dir)
    options = SlurmOptions(**{**last["options"], **changes})
    cfg = load_config(run_dir / CONFIG_FILE, overrides)
    _check(cfg, options)
    if cfg.train.run_dir != str(run_dir):
        raise UserError(f"--resume {run_dir}: its config names another train.run_dir ({cfg.train.run_dir})")
    prepare_run_dir(cfg, resume=True)
    return _submit([run_dir], options, resumed=True)


def _check(cfg: RunConfig, options: SlurmOptions) -> None:
    cfg.engine.accumulation(options.world_size)  # a batch that does not divide fails here, not on the cluster
    check_special_ids(cfg)


def _script(run_dirs: list[Path], options: SlurmOptions) -> str:
    first = Path(run_dirs[0]).resolve() / "logs"
    output = first / ("slurm-%A_%a.out" if len(run_dirs) > 1 else "slurm-%j.out")
    return render(run_dirs, options, sys.executable, str(output))


def _submit(run_dirs: list[Path], options: SlurmOptions, resumed: bool) -> str:
    text = _script(run_dirs, options)
    snapshots = []
    for run_dir in run_dirs:
        (run_dir / "logs").mkdir(exist_ok=True)
        (run_dir / SCRIPT_FILE).write_text(text)
        snapshots.append(_snapshot(run_dir, options))
    if shutil.which("sbatch") is None:
        raise UserError(f"sbatch not found: submit from a SLURM login node (the script is ready in "
                        f"{run_dirs[0] / SCRIPT_FILE})")
    result = subprocess.run(["sbatch", "--parsable", str(run_dirs[0] / SCRIPT_FILE)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise UserError(f"sbatch refused {run_dirs[0] / SCRIPT_FILE}: {result.stderr.strip()}")
    job_id = result.stdout.strip().split(";")[0]
    for i, (run_dir, snapshot) in enumerate(zip(run_dirs, snapshots, strict=True)):
        element = f"{job_id}_{i}" if len(run_dirs) > 1 else job_id
        record = {"job_id": element, "submitted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "resumed": resumed, "snapshot": str(snapshot.relative_to(run_dir)),
                  "options": dataclasses.asdict(options)}
        with open(run_dir / JOBS_FILE, "a") as out:
            out.write(json.dumps(record) + "\n")
    return job_id


def _snapshot(run_dir: Path, options: SlurmOptions) -> Path:
    """job/N/: what this submission runs, so that a result can be traced to its code and environment."""
    jobs = run_dir / "job"
    jobs.mkdir(exist_ok=True)
    snapshot = jobs / str(len([p for p in jobs.iterdir() if p.is_dir()]) + 1)
    snapshot.mkdir()
    shutil.copy(run_dir / CONFIG_FILE, snapshot / CONFIG_FILE)
    shutil.copy(run_dir / SCRIPT_FILE, snapshot / SCRIPT_FILE)
    if options.env_setup:
        shutil.copy(options.env_setup, snapshot / "env-setup.sh")
    (snapshot / "options.json").write_text(json.dumps({**dataclasses.asdict(options), "argv": sys.argv}, indent=1))
    (snapshot / "code.txt").write_text(_code_version())
    (snapshot / "code.diff").write_text(_git("diff", "HEAD") or "")
    (snapshot / "packages.txt").write_text(installed_packages())
    return snapshot


def installed_packages() -> str:
    """The installed distributions as NAME==VERSION, one a line (with "# from URL" for one installed from a
    folder or a URL, "editable" where it is), as `pip freeze` would list them but read in this process:
    starting pip took 10 s of a 18 s submission on a busy machine."""
    lines = set()
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        origin = json.loads(dist.read_text("direct_url.json") or "{}")
        editable = origin.get("dir_info", {}).get("editable")
        lines.add(f"{name}=={dist.version}" + (f"  # {'editable ' if editable else ''}from {origin['url']}"
                                                if origin.get("url") else ""))
    return "".join(f"{line}\n" for line in sorted(lines, key=str.lower))


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(CODE_ROOT), *args], capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    return result.stdout if result.returncode == 0 else None


def _code_version() -> str:
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return f"code: {CODE_ROOT} (not a git checkout)\npython: {sys.version}\n"
    status = _git("status", "--short") or ""
    return (f"code: {CODE_ROOT}\ncommit: {commit.strip()}\n"
            f"uncommitted changes: {'see code.diff' if status.strip() else 'none'}\n{status}python: {sys.version}\n")


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
