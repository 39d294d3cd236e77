"""Preflight of a multi-node job, before torchrun starts: every node joins a store on the first node and passes
one gloo all-reduce over the real network, within a timeout. On failure the error names the nodes that did not
join and the address they were told to reach, instead of torchrun waiting out its rendezvous timeout silently.
"""

from __future__ import annotations

import socket
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from data_pipeline.errors import UserError


def preflight(address: str, port: int, node_rank: int, node_names: list[str], timeout_s: float) -> float:
    """Run the check on this node (one process per node); returns the seconds it took."""
    start = time.monotonic()
    count, me, head = len(node_names), node_names[node_rank], node_names[0]
    where = f"{address}:{port} (the first node, {head})"
    try:
        store = dist.TCPStore(address, port, count, is_master=node_rank == 0, timeout=timedelta(seconds=timeout_s),
                              wait_for_workers=False)
    except (RuntimeError, OSError) as exc:  # DistNetworkError and friends are RuntimeErrors
        raise UserError(f"preflight: node {me} could not reach the rendezvous at {where} within {timeout_s:g} s "
                        f"({str(exc).splitlines()[0]}); check that {head}'s address is reachable from {me} "
                        "(routes, firewall, the interface its name resolves to)") from None
    store.set(f"joined/{node_rank}", socket.gethostname())
    _wait_for_all(store, "joined", node_names, start + timeout_s,
                  lambda missing: f"preflight: {len(missing)} of {count} nodes did not join within {timeout_s:g} s: "
                                  f"{', '.join(missing)}; they were told to reach {where}. Check those nodes' "
                                  "network, or exclude them (sbatch --exclude) and resubmit")
    dist.init_process_group("gloo", store=dist.PrefixStore("preflight", store), rank=node_rank, world_size=count,
                            timeout=timedelta(seconds=max(1.0, start + timeout_s - time.monotonic())))
    try:
        total = torch.ones(1)
        dist.all_reduce(total)
        if total.item() != count:
            raise UserError(f"preflight: the all-reduce over {count} nodes gave {total.item()}, not {count}")
    finally:
        dist.destroy_process_group()
    store.set(f"done/{node_rank}", "1")
    if node_rank == 0:  # the store lives here: keep it until every node has finished with it
        _wait_for_all(store, "done", node_names, start + timeout_s,
                      lambda missing: f"preflight: nodes {', '.join(missing)} did not finish the check")
    return time.monotonic() - start


def _wait_for_all(store, prefix: str, node_names: list[str], deadline: float, message) -> None:
    while True:
        missing = [name for i, name in enumerate(node_names) if not store.check([f"{prefix}/{i}"])]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise UserError(message(missing))
        time.sleep(0.05)
