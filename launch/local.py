"""Starting a training run on this machine: set up the run directory, then train in-process or under torchrun."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from data_pipeline.errors import UserError
from pretrain import checkpoint, failures
from pretrain.config import RunConfig, check_special_ids, config_changes, load_config, save_config
from pretrain.dataset_copy import keep_dataset_files
from pretrain.engine import check_precision
from pretrain.models.config import architecture_changes
from pretrain.signals import PREEMPTION_SIGNALS
from pretrain.run_dir import CONFIG_FILE
from pretrain.watchdog import HANG_DIR

TORCHRUN_SIGNALS = (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)  # torchrun's defaults, kept
SHUTDOWN_GRACE_S = 600  # how long torchrun lets workers finish a signal checkpoint before it kills them


def prepare_run_dir(cfg: RunConfig, resume: bool) -> Path:
    """Create (or, with resume, check) the run directory and write the resolved config into it.

    Never overwrites an earlier run: a directory that holds one needs --resume, and a resumed run whose
    config changed keeps the old config beside the new one.
    """
    run_dir = Path(cfg.train.run_dir)
    config_file = run_dir / CONFIG_FILE
    if resume:
        latest = checkpoint.latest_checkpoint(run_dir)
        if latest is None:
            raise UserError(f"--resume: {run_dir} holds no complete checkpoint to resume from; start the run "
                            "without --resume")
        old = load_config(config_file)
        trained = checkpoint.read_meta(latest).get("model") or dataclasses.asdict(old.model)
        edits = architecture_changes(trained, cfg.model)
        if edits:
            raise UserError(f"--resume: {latest} holds another model than this config describes "
                            f"({', '.join(edits)}); resume with the checkpoint's values, or start a new run in "
                            "another train.run_dir")
        keep_dataset_files(run_dir, cfg.data.path, False, cfg.data.remote)  # refuses another dataset before any write
        changes = config_changes(old, cfg)
        if changes:
            print(f"resuming {run_dir} from {latest.name} with a changed config:\n  " + "\n  ".join(changes))
            config_file.rename(run_dir / f"config.before-{latest.name}.{int(time.time())}.yaml")
            save_config(cfg, config_file)
        return run_dir
    if config_file.exists() or checkpoint.checkpoints_dir(run_dir).exists():
        raise UserError(f"{run_dir} already holds a run; pass --resume to continue it, or set "
                        "train.run_dir=NEW_DIR to start another")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, config_file)
    return run_dir


def launch_training(config: str | None, overrides: list[str], nproc: int, resume: bool) -> tuple[Path, str]:
    """Run training to its end; returns (run directory, what stopped it: see pretrain.trainer.Outcome)."""
    run_dir = set_up_run(config, overrides, nproc, resume)
    if nproc == 1:
        from pretrain.trainer import train

        return run_dir, train(run_dir, resume=resume).stopped_by
    return run_dir, run_workers(run_dir, nproc, resume)


def set_up_run(config: str | None, overrides: list[str], nproc: int, resume: bool) -> Path:
    """Check the config against `nproc` and the dataset, then set up the run directory (prepare_run_dir): all that
    happens before any training process starts. Returns the run directory."""
    cfg = load_config(config, overrides)
    if nproc < 1:
        raise UserError(f"--nproc must be at least 1, got {nproc}")
    cfg.engine.accumulation(nproc)  # a batch-size mismatch fails here, before any process starts
    check_special_ids(cfg)  # so does a model preset whose special ids are not the dataset tokenizer's
    check_precision(cfg.engine)  # and fp16 where DeepSpeed has none
    return prepare_run_dir(cfg, resume)


def run_workers(run_dir: Path, nproc: int, resume: bool, rendezvous: list[str] | None = None,
                forward_signals: bool = True) -> str:
    """Run the workers under torchrun, forwarding preemption signals to them; returns what stopped them
    ("hang" when the hang watchdog ended them). `rendezvous`: torchrun's multi-node options (default:
    --standalone); `forward_signals=False` where the signal reaches every process already (SLURM's steps)."""
    before = checkpoint.latest_checkpoint(run_dir)
    started = time.time()
    cmd = [sys.executable, "-m", "launch.torchrun", *(rendezvous or ["--standalone"]),
           f"--nproc_per_node={nproc}",
           # torchrun (without its traceback: launch/torchrun.py) passes the signals it handles on to every worker,
           # then waits up to the grace period.
           f"--signals-to-handle={','.join(s.name for s in (*PREEMPTION_SIGNALS, *TORCHRUN_SIGNALS))}",
           f"--shutdown-timeout={SHUTDOWN_GRACE_S}", "-m", "launch.worker", str(run_dir)] + \
        (["--resume"] if resume else [])
    import torch  # only to ask whether there is a GPU

    env = dict(os.environ)
    if not torch.cuda.is_available():
        env.setdefault("DS_ACCELERATOR", "cpu")
    failures.clear_records(run_dir)
    proc = subprocess.Popen(cmd, env=env)
    forward = (lambda signum, frame: proc.send_signal(signum)) if forward_signals else signal.SIG_IGN
    previous = {sig: signal.signal(sig, forward) for sig in PREEMPTION_SIGNALS}
    try:
        returncode = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    latest = checkpoint.latest_checkpoint(run_dir)
    if latest is not None and latest != before and checkpoint.read_meta(latest)["reason"].startswith("signal"):
        return checkpoint.read_meta(latest)["reason"]  # a preemption checkpoint written by this session
    if returncode != 0 and any(p.stat().st_mtime >= started for p in (run_dir / HANG_DIR).glob("stacks-rank*")):
        return "hang"  # every rank wrote its stacks and left with the requeue code
    if returncode != 0:
        raise failures.run_failure(run_dir, nproc, returncode)
    return checkpoint.read_meta(latest)["reason"]
