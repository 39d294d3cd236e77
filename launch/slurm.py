"""Submitting training runs to SLURM: submit, submit_array, resume (watching them: launch.slurm_jobs).

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
from launch.slurm_jobs import JOBS_FILE, last_job
from launch.slurm_script import SlurmOptions, render
from pretrain.config import RunConfig, check_special_ids, load_config
from pretrain.run_dir import CONFIG_FILE

SCRIPT_FILE = "train.sbatch"
CODE_ROOT = Path(__file__).resolve().parent.parent


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
