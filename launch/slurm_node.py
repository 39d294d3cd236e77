"""What each node of a SLURM job runs (one srun task per node): the preflight, then torchrun with a c10d
rendezvous on the first node. `python -m launch.slurm_node RUN_DIR --head ADDR --port P --procs-per-node G`.

Exit codes: 0 done, 75 checkpointed on a signal or ended by the hang watchdog (the batch script requeues),
anything else a failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from data_pipeline.errors import UserError
from launch.local import run_workers
from launch.slurm_hosts import expand_hostlist
from launch.slurm_preflight import preflight
from pretrain import checkpoint
from pretrain.signals import REQUEUE_EXIT_CODE


def torchrun_args(nnodes: int, procs_per_node: int, head: str, port: int, job_id: str, node_rank: int,
                  join_timeout_s: float) -> list[str]:
    """torchrun's options for node `node_rank` of an `nnodes`-node job: a c10d rendezvous hosted on the first
    node (is_host says so explicitly, no guessing from host names), world size nnodes * procs_per_node."""
    return [f"--nnodes={nnodes}", f"--nproc_per_node={procs_per_node}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={head}:{port}", f"--rdzv-id={job_id}",
            f"--rdzv-conf=is_host={int(node_rank == 0)},join_timeout={int(join_timeout_s)}", "--max-restarts=0"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m launch.slurm_node")
    parser.add_argument("run_dir")
    parser.add_argument("--head", required=True, help="the first node's address")
    parser.add_argument("--port", type=int, required=True, help="rendezvous port; the preflight uses port + 1")
    parser.add_argument("--procs-per-node", type=int, required=True)
    parser.add_argument("--preflight-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    nodes = expand_hostlist(os.environ["SLURM_JOB_NODELIST"])
    node_rank, job_id = int(os.environ["SLURM_NODEID"]), os.environ["SLURM_JOB_ID"]
    me = nodes[node_rank]
    try:
        took = preflight(args.head, args.port + 1, node_rank, nodes, args.preflight_timeout)
        print(f"[{me}] preflight passed: {len(nodes)} node(s) joined {args.head} and passed an all-reduce in "
              f"{took:.1f} s", flush=True)
        resume = checkpoint.latest_checkpoint(run_dir) is not None
        rendezvous = torchrun_args(len(nodes), args.procs_per_node, args.head, args.port, job_id, node_rank,
                                   args.preflight_timeout)
        # SLURM signals every process of the step itself (proctrack): forwarding again would signal twice.
        stopped_by = run_workers(run_dir, args.procs_per_node, resume, rendezvous, forward_signals=False)
    except UserError as exc:
        print(f"error: [{me}] {exc}", file=sys.stderr, flush=True)
        return 1
    if stopped_by.startswith("signal") or stopped_by == "hang":
        print(f"[{me}] stopped by {stopped_by}; exit {REQUEUE_EXIT_CODE} to requeue", flush=True)
        return REQUEUE_EXIT_CODE
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
