"""The options of a SLURM training job and the batch script rendered from slurm/train.sbatch with them."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from data_pipeline.errors import UserError
from pretrain.signals import PREEMPTION_SIGNALS

_HERE = Path(__file__).resolve().parent
# The top-level slurm/ folder of a checkout; a wheel ships it as launch/slurm_templates (pyproject.toml).
TEMPLATE = (_HERE / "slurm_templates" if (_HERE / "slurm_templates").is_dir() else _HERE.parent / "slurm") / \
    "train.sbatch"
SIGNALS = tuple(s.name[3:] for s in PREEMPTION_SIGNALS)  # the trainer checkpoints on these: TERM, USR1, USR2
PORT_BASE = 20000  # rendezvous port = PORT_BASE + 2 * (job id % 10000): jobs sharing a node do not collide


@dataclass
class SlurmOptions:
    nodes: int = 1  # nodes of the allocation, one srun task (one torchrun) on each
    gpus_per_node: int = 0  # GPUs requested per node (--gpus-per-node); 0 on CPU-only partitions
    procs_per_node: int | None = None  # training processes per node; default: gpus_per_node
    cpus_per_task: int | None = None  # CPUs per node's task (--cpus-per-task); default: SLURM's
    partition: str | None = None  # --partition
    account: str | None = None  # --account
    qos: str | None = None  # --qos
    time: str | None = None  # --time limit, e.g. 24:00:00; the signal comes signal_seconds before it
    constraint: str | None = None  # --constraint, e.g. a GPU type's feature
    exclusive: bool = False  # --exclusive: whole nodes
    env_setup: str | None = None  # a bash file sourced before training (modules, conda, NCCL_SOCKET_IFNAME ...)
    signal: str = "USR2"  # preemption warning: TERM, USR1 or USR2 (NCCL may use USR1; hence USR2)
    signal_seconds: int = 300  # the warning comes this long before the time limit: enough for a checkpoint
    max_requeues: int = 3  # exit 75 requeues the job at most this many times (SLURM_RESTART_COUNT)
    preflight_timeout: float = 120.0  # seconds for every node to join and pass the preflight's all-reduce
    job_name: str | None = None  # default: the run directory's name
    sbatch_args: list[str] = field(default_factory=list)  # further sbatch options, e.g. --mem=0

    def __post_init__(self):
        self.signal = self.signal.upper().removeprefix("SIG")
        if self.signal not in SIGNALS:
            raise UserError(f"--signal {self.signal}: the trainer checkpoints on {', '.join(SIGNALS)} only; "
                            "pick one of those (default USR2)")
        for name in ("nodes", "signal_seconds", "preflight_timeout"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("gpus_per_node", "max_requeues"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.procs_per_node is None:
            if self.gpus_per_node == 0:
                raise UserError("--gpus-per-node 0 (CPU) needs --procs-per-node N, the training processes per node")
            self.procs_per_node = self.gpus_per_node
        if self.procs_per_node <= 0:
            raise UserError(f"--procs-per-node must be positive, got {self.procs_per_node}")
        if self.env_setup is not None:
            if not Path(self.env_setup).is_file():
                raise UserError(f"--env-setup {self.env_setup}: no such file (a bash file to source in the job)")
            self.env_setup = str(Path(self.env_setup).resolve())

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node


def render(run_dirs: list[Path], options: SlurmOptions, python: str, output: str) -> str:
    """The batch script for `run_dirs` (one: a plain job; several: a job array, one element per run directory);
    `output` is sbatch's --output pattern."""
    lines = [f"#SBATCH --{flag}={value}" for flag, value in (
        ("gpus-per-node", options.gpus_per_node or None), ("cpus-per-task", options.cpus_per_task),
        ("partition", options.partition), ("account", options.account), ("qos", options.qos),
        ("time", options.time), ("constraint", options.constraint),
        ("array", f"0-{len(run_dirs) - 1}" if len(run_dirs) > 1 else None)) if value is not None]
    lines += ["#SBATCH --exclusive"] * options.exclusive + [f"#SBATCH {arg}" for arg in options.sbatch_args]
    values = {
        "job_name": options.job_name or Path(run_dirs[0]).name, "nodes": options.nodes,
        "sbatch_lines": "\n".join(lines), "signal": options.signal, "signal_seconds": options.signal_seconds,
        "output": output, "run_dirs": " ".join(shlex.quote(str(Path(d).resolve())) for d in run_dirs),
        "python": shlex.quote(python), "procs_per_node": options.procs_per_node,
        "max_requeues": options.max_requeues, "port_base": PORT_BASE, "preflight_timeout": options.preflight_timeout,
        "env_setup": f"source {shlex.quote(options.env_setup)}" if options.env_setup else "",
    }
    text = re.sub(r"\{\{(\w+)\}\}", lambda m: str(values[m.group(1)]), TEMPLATE.read_text())
    return re.sub(r"\n\n+(#SBATCH)", r"\n\1", text)  # no blank line where an option list is empty
