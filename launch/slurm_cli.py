"""`graft slurm submit|status|logs|cancel`: the command line of launch.slurm."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from data_pipeline.errors import UserError
from launch.slurm_script import SIGNALS, SlurmOptions

# Options that --resume takes over from the last submission unless given again.
_OPTION_FLAGS = [f.name for f in dataclasses.fields(SlurmOptions)]


def add_parser(commands) -> None:
    p = commands.add_parser("slurm", help="run training as a SLURM job: submit, status, logs, cancel",
                            description="Multi-node training on SLURM: one torchrun per node with a c10d "
                                        "rendezvous on the first node, requeue on preemption, preflight, "
                                        "hang watchdog. See docs/slurm.md.")
    sub = p.add_subparsers(dest="slurm_command", required=True, metavar="SUBCOMMAND")

    s = sub.add_parser(
        "submit", help="render slurm/train.sbatch into the run directory and sbatch it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Submit CONFIG (plus KEY=VALUE overrides) as a SLURM job training in train.run_dir, or, with\n"
                    "--resume RUN_DIR, continue that run from its latest checkpoint (also on another number of\n"
                    "nodes; the checkpoint's world size is converted).",
        epilog="The job traps the signal (--signal, default USR2, sent --signal-seconds before --time), passes it "
               "to every rank,\ncheckpoints, exits 75 and requeues itself (at most --max-requeues times); the "
               "requeued job resumes.\nThe run directory gets train.sbatch, logs/slurm-JOBID.out and job/N/ (config, "
               "script, git commit and diff,\ninstalled packages).\n\n"
               "examples:\n  graft slurm submit configs/quickstart.yaml data.path=DATA train.run_dir=runs/a "
               "--nodes 4 --gpus-per-node 8 --time 24:00:00\n"
               "  graft slurm submit --resume runs/a --nodes 2")
    s.add_argument("config", nargs="?", metavar="CONFIG", help="YAML config (not with --resume)")
    s.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides in dotted form")
    s.add_argument("--resume", metavar="RUN_DIR", help="continue this run (submitted before) from its checkpoint")
    s.add_argument("--nodes", type=int, help="nodes (default 1)")
    s.add_argument("--gpus-per-node", type=int, help="GPUs per node, and training processes per node (default 0)")
    s.add_argument("--procs-per-node", type=int, help="training processes per node (default: --gpus-per-node; "
                                                      "needed on CPU nodes)")
    s.add_argument("--cpus-per-task", type=int, help="CPUs for each node's task (default: SLURM's)")
    for name in ("partition", "account", "qos", "time", "constraint"):
        s.add_argument(f"--{name}", help=f"sbatch --{name}")
    s.add_argument("--exclusive", action="store_true", default=None, help="sbatch --exclusive (whole nodes)")
    s.add_argument("--env-setup", metavar="FILE", help="bash file sourced in the job before training (modules, "
                                                       "conda activate, NCCL_SOCKET_IFNAME ...)")
    s.add_argument("--signal", help=f"preemption warning signal, one of {', '.join(SIGNALS)} (default USR2)")
    s.add_argument("--signal-seconds", type=int, help="send it this long before --time ends (default 300)")
    s.add_argument("--max-requeues", type=int, help="requeue at most this many times (default 3)")
    s.add_argument("--preflight-timeout", type=float, help="seconds for all nodes to join (default 120)")
    s.add_argument("--job-name", help="default: the run directory's name")
    s.add_argument("--sbatch", action="append", dest="sbatch_args", metavar="OPTION",
                   help="another sbatch option, e.g. --sbatch=--mem=0 (repeatable)")
    s.add_argument("--dry-run", action="store_true", help="print the script; write and submit nothing")
    s.set_defaults(run=_submit)

    for name, helptext, handler in (("status", "job state, requeues, last step and loss, last checkpoint", _status),
                                    ("logs", "print the job's log", _logs),
                                    ("cancel", "cancel the run's job (scancel)", _cancel)):
        c = sub.add_parser(name, help=helptext, description=helptext)
        c.add_argument("run_dir", metavar="RUN_DIR")
        if name == "logs":
            c.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
        c.set_defaults(run=handler)


def _given(args) -> dict:
    return {name: getattr(args, name) for name in _OPTION_FLAGS if getattr(args, name, None) is not None}


def _submit(args) -> None:
    from launch import slurm  # the config and training code (torch): only submitting needs them

    if args.resume:
        overrides = [args.config, *args.overrides] if args.config else args.overrides
        if args.dry_run:
            raise UserError("--dry-run with --resume: not supported; drop --dry-run")
        job_id = slurm.resume(Path(args.resume), overrides, _given(args))
        print(f"submitted job {job_id}: continues {args.resume} from its latest checkpoint; "
              f"watch it with graft slurm status {args.resume}")
        return
    if not args.config:
        raise UserError("graft slurm submit needs CONFIG (or --resume RUN_DIR)")
    run_dir, result = slurm.submit(args.config, args.overrides, SlurmOptions(**_given(args)), dry_run=args.dry_run)
    if args.dry_run:
        print(result, end="")
        return
    print(f"submitted job {result}: run directory {run_dir} (train.sbatch, logs/slurm-{result}.out, job/); "
          f"graft slurm status {run_dir} | logs {run_dir} --follow | cancel {run_dir}")


def _status(args) -> None:
    from launch import slurm_jobs

    print(slurm_jobs.status(Path(args.run_dir)))


def _logs(args) -> None:
    from launch import slurm_jobs

    slurm_jobs.logs(Path(args.run_dir), follow=args.follow)


def _cancel(args) -> None:
    from launch import slurm_jobs

    print(f"cancelled job {slurm_jobs.cancel(Path(args.run_dir))}")
