"""A real SLURM cluster on this machine, for tests and bench/slurm_requeue.py (needs root).

munged and slurmctld run in the root network namespace; each compute node runs its own slurmd in a network
namespace of its own (joined to a bridge by a veth pair, its own address in a private subnet), with its own
hostname and an /etc/hosts naming every node, so a 2-node job spans two network stacks. Everything lives in
one temporary directory and is torn down by `stop()`.

Each node has two addresses: SLURM's (NodeAddr, used by the daemons and srun) and the one its name resolves to
(used by Graft's rendezvous and gloo). A test can then cut one node off the other's rendezvous address
(`cut_rendezvous`) while SLURM itself keeps working.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BRIDGE = "graftbr0"
SUBNET = "10.231.7"  # exists only inside this machine
CONTROLLER_ADDR = f"{SUBNET}.1"


def slurm_available() -> str | None:
    """None when a cluster can be started here, else why not."""
    if os.geteuid() != 0:
        return "starting SLURM daemons and network namespaces needs root"
    install_slurm()
    missing = [tool for tool in ("slurmctld", "slurmd", "munged", "ip", "unshare", "nsenter") if not shutil.which(tool)]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install slurm-wlm munge iproute2 util-linux)"
    return None


def install_slurm() -> None:
    """Install Debian's slurm-wlm and munge when they are missing (as root)."""
    if shutil.which("slurmctld") and shutil.which("munged"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"], check=True, env=env,
                   capture_output=True)


@dataclass
class Node:
    name: str
    slurm_addr: str  # SLURM's NodeAddr
    addr: str  # what the node's name resolves to
    netns: str
    process: subprocess.Popen | None = None


@dataclass
class Cluster:
    root: Path
    nodes: list[Node]
    conf: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def env(self) -> dict:
        """The environment for SLURM's client commands (and so for `graft slurm`)."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def slurm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, check=check, timeout=60)

    def wait_idle(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.slurm("sinfo", "-h", "-N", "-o", "%N %t", check=False).stdout.split()
            states = dict(zip(out[::2], out[1::2], strict=False))
            if all(states.get(n.name) == "idle" for n in self.nodes):
                return
            time.sleep(0.3)
        raise RuntimeError(f"nodes not idle after {timeout} s: {states}\n{self.logs()}")

    def job_state(self, job_id: str) -> dict:
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, ...)."""
        out = self.slurm("scontrol", "-o", "show", "job", job_id).stdout
        return dict(item.split("=", 1) for item in out.split() if "=" in item)

    def wait_job(self, job_id: str, timeout: float = 300, states=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT",
                                                                   "NODE_FAIL", "OUT_OF_MEMORY")) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.job_state(job_id)
            if info.get("JobState") in states:
                return info
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} still {info.get('JobState')} after {timeout} s")

    def node_pids(self, node: Node, needle: str) -> list[int]:
        """Processes of `node`'s network namespace whose command line contains `needle`."""
        if not os.path.exists(f"/run/netns/{node.netns}"):
            return []
        target = os.stat(f"/run/netns/{node.netns}").st_ino
        pids = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if os.stat(proc / "ns" / "net").st_ino == target and needle in (proc / "cmdline").read_text():
                    pids.append(int(proc.name))
            except OSError:
                continue
        return pids

    def cut_rendezvous(self, from_node: Node, to_node: Node, cut: bool = True) -> None:
        """Make `to_node`'s rendezvous address unreachable from `from_node` (SLURM's addresses stay up)."""
        _ip("-n", from_node.netns, "route", "add" if cut else "del", "blackhole", f"{to_node.addr}/32")

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in sorted((self.root / "log").glob("*")))

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for node in self.nodes:  # job processes left behind in a node's namespace
            for pid in self.node_pids(node, ""):
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            _ip("netns", "del", node.netns, check=False)
        _ip("link", "del", BRIDGE, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


def start_cluster(num_nodes: int = 2, cpus: int | None = None) -> Cluster:
    """Start munged, slurmctld and `num_nodes` slurmd's, each in its own network namespace; wait until idle."""
    install_slurm()
    root = Path(tempfile.mkdtemp(prefix="graft-slurm-"))
    for sub in ("state", "spool", "log", "run", "munge", *(f"spool/gn{i + 1}" for i in range(num_nodes))):
        (root / sub).mkdir()
    os.chmod(root, 0o755)
    os.chmod(root / "munge", 0o755)
    cpus = cpus or os.cpu_count()
    nodes = [Node(f"gn{i + 1}", f"{SUBNET}.{10 + i}", f"{SUBNET}.{100 + i}", f"graft-n{i + 1}")
             for i in range(num_nodes)]
    cluster = Cluster(root, nodes, root / "slurm.conf")
    try:
        _network(nodes)
        munge_socket = _start_munge(cluster)
        cluster.conf.write_text(_slurm_conf(root, nodes, cpus, munge_socket))
        (root / "hosts").write_text("127.0.0.1 localhost\n" + f"{CONTROLLER_ADDR} {socket.gethostname()}\n" +
                                    "".join(f"{n.addr} {n.name}\n" for n in nodes))
        (root / "resolv.conf").write_text("options timeout:0 attempts:1\n")  # no nameserver: give up at once
        cluster.processes.append(subprocess.Popen(
            ["slurmctld", "-D", "-i", "-f", str(cluster.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for node in nodes:
            # Not `ip netns exec`: it remounts /sys, and slurmd then finds no cgroup filesystem.
            script = (f"mount --bind {root}/hosts /etc/hosts && mount --bind {root}/resolv.conf /etc/resolv.conf "
                      f"&& hostname {node.name} && exec nsenter --net=/run/netns/{node.netns} "
                      f"slurmd -D -N {node.name} -f {cluster.conf}")
            node.process = subprocess.Popen(["unshare", "--uts", "--mount", "--propagation", "private",
                                             "sh", "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cluster.processes.append(node.process)
        cluster.wait_idle()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _network(nodes: list[Node]) -> None:
    _ip("link", "del", BRIDGE, check=False)  # left by a killed session
    _ip("link", "add", BRIDGE, "type", "bridge")
    _ip("addr", "add", f"{CONTROLLER_ADDR}/24", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")
    for i, node in enumerate(nodes):
        _ip("netns", "del", node.netns, check=False)
        _ip("netns", "add", node.netns)
        host_end, node_end = f"gveth{i}h", f"gveth{i}n"
        _ip("link", "del", host_end, check=False)  # left by a killed session
        _ip("link", "add", host_end, "type", "veth", "peer", "name", node_end)
        _ip("link", "set", host_end, "master", BRIDGE)
        _ip("link", "set", host_end, "up")
        _ip("link", "set", node_end, "netns", node.netns)
        _ip("-n", node.netns, "addr", "add", f"{node.slurm_addr}/24", "dev", node_end)
        _ip("-n", node.netns, "addr", "add", f"{node.addr}/24", "dev", node_end)
        _ip("-n", node.netns, "link", "set", node_end, "up")
        _ip("-n", node.netns, "link", "set", "lo", "up")


def _start_munge(cluster: Cluster) -> Path:
    munge = cluster.root / "munge"
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o600)
    socket_path = munge / "munge.socket"
    process = subprocess.Popen(["munged", "-F", "--force", f"--key-file={key}", f"--socket={socket_path}",
                                f"--pid-file={munge}/munged.pid", f"--seed-file={munge}/munged.seed",
                                f"--log-file={cluster.root}/log/munged.log"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cluster.processes.append(process)
    deadline = time.monotonic() + 20
    while not socket_path.exists():
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"munged did not start:\n{cluster.logs()}")
        time.sleep(0.1)
    return socket_path


def _slurm_conf(root: Path, nodes: list[Node], cpus: int, munge_socket: Path) -> str:
    lines = [
        "ClusterName=graft-test",
        f"SlurmctldHost={socket.gethostname()}({CONTROLLER_ADDR})",
        "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", "CredType=cred/munge",
        # cred_expire=10 and fast scheduling: a requeued job starts again after ~11 s instead of ~2 min.
        f"AuthInfo=socket={munge_socket},cred_expire=10",
        "SchedulerParameters=bf_interval=1,sched_interval=2",
        "SchedulerType=sched/backfill",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
        "JobRequeue=1", "ReturnToService=2", "MpiDefault=none",
        "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none",
        "MinJobAge=600", "KillWait=10", "InactiveLimit=0", "MessageTimeout=10",
        "SlurmctldPort=26817", "SlurmdPort=26818",
        f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool/%n",
        f"SlurmctldLogFile={root}/log/slurmctld.log", f"SlurmdLogFile={root}/log/slurmd-%n.log",
        f"SlurmctldPidFile={root}/run/slurmctld.pid", f"SlurmdPidFile={root}/run/slurmd-%n.pid",
        *(f"NodeName={n.name} NodeAddr={n.slurm_addr} CPUs={cpus} State=UNKNOWN" for n in nodes),
        f"PartitionName=test Nodes={','.join(n.name for n in nodes)} Default=YES MaxTime=INFINITE State=UP",
    ]
    return "\n".join(lines) + "\n"
