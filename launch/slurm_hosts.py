"""The allocation's nodes and the rendezvous address: SLURM's node list expanded, the first node resolved.

Run on the first node of a job by the batch script: `python -m launch.slurm_hosts head-address` prints the
address every node is told to reach, or fails loudly; a multi-node job never falls back to localhost (each node
would become a world of its own and wait forever).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import sys
from collections.abc import Callable

from data_pipeline.errors import UserError

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def expand_hostlist(hostlist: str) -> list[str]:
    """SLURM's compact node list as names, in order: "gpu[001-003,007],login1" -> gpu001 gpu002 gpu003 gpu007
    login1 (the same as `scontrol show hostnames`)."""
    names = []
    for item in _split_top_level(hostlist):
        match = re.fullmatch(r"([^\[\]]*)\[([^\]]+)\](.*)", item)
        if not match:
            names.append(item)
            continue
        prefix, ranges, rest = match.groups()
        for part in ranges.split(","):
            bounds = _RANGE.match(part)
            if not bounds:
                raise UserError(f"node list {hostlist!r}: cannot read the range {part!r}")
            low, high = bounds.group(1), bounds.group(2) or bounds.group(1)
            tails = expand_hostlist(rest) if rest else [""]
            for number in range(int(low), int(high) + 1):
                names.extend(prefix + str(number).zfill(len(low)) + tail for tail in tails)
    return names


def _split_top_level(hostlist: str) -> list[str]:
    """Split at commas outside brackets."""
    items, depth, current = [], 0, ""
    for char in hostlist:
        depth += char == "["
        depth -= char == "]"
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    return [item for item in [*items, current] if item]


def resolve(host: str) -> str:
    """The IPv4 address of `host` (the first that getaddrinfo gives)."""
    try:
        return socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except socket.gaierror as exc:
        raise UserError(f"cannot resolve {host!r}, the first node of the allocation, to an address ({exc}); "
                        "the nodes' names must resolve on every node") from None


def head_address(nodelist: str, resolver: Callable[[str], str] = resolve) -> tuple[str, str]:
    """(first node's name, its address) for a job on `nodelist`. A loopback address is refused when the job
    spans more than one node: the other nodes could never reach it."""
    nodes = expand_hostlist(nodelist)
    if not nodes:
        raise UserError("SLURM_JOB_NODELIST is empty: run this inside a SLURM job")
    address = resolver(nodes[0])
    if len(nodes) > 1 and ipaddress.ip_address(address).is_loopback:
        raise UserError(f"the first node {nodes[0]} resolves to {address}, a loopback address, so the other "
                        f"{len(nodes) - 1} node(s) could not reach its rendezvous; fix /etc/hosts (or DNS) so that "
                        f"{nodes[0]} names its network address")
    return nodes[0], address


def main(argv: list[str]) -> int:
    if argv != ["head-address"]:
        print("usage: python -m launch.slurm_hosts head-address", file=sys.stderr)
        return 2
    try:
        _, address = head_address(os.environ.get("SLURM_JOB_NODELIST", ""))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(address)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
