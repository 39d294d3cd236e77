"""`graft slurm` against a real SLURM started by this module: munged, slurmctld and two slurmd's, each in a network
namespace of its own (tests/slurm/cluster.py), so that a 2-node job's rendezvous and gloo traffic cross a veth
link. One cluster for the whole module; jobs are tiny 2-process CPU trainings."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from cluster import slurm_available, start_cluster
from conftest import REPO_ROOT, logged_losses
from pretrain import checkpoint
from pretrain.metrics import read_metrics

pytestmark = pytest.mark.slow
TINY = REPO_ROOT / "configs" / "tiny.yaml"
STEPS = ["train.max_steps=24", "train.save_every=8", "train.log_every=1", "train.hang_timeout_minutes=5"]

if slurm_available():
    pytest.fail(f"the SLURM tests cannot run here: {slurm_available()}", pytrace=False)


@pytest.fixture(scope="module")
def cluster():
    c = start_cluster(num_nodes=2)
    yield c
    c.stop()


def graft(cluster, *args, check=True) -> subprocess.CompletedProcess:
    env = {**cluster.env, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "-m", "launch.cli", *map(str, args)], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"graft {' '.join(map(str, args))}: {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def submit(cluster, small_dataset, run_dir, *args) -> str:
    out = graft(cluster, "slurm", "submit", TINY, f"data.path={small_dataset}", f"train.run_dir={run_dir}", *STEPS,
                *args).stdout
    return job_of(out)


def job_of(out: str) -> str:
    return re.search(r"^submitted job (\S+?):", out, re.M).group(1)


def log_of(run_dir, job_id) -> str:
    return (run_dir / "logs" / f"slurm-{job_id}.out").read_text()


def finished(cluster, run_dir, job_id, timeout=300) -> dict:
    try:
        return cluster.wait_job(job_id, timeout)
    except TimeoutError:
        raise AssertionError(f"{log_of(run_dir, job_id)}\n{cluster.logs()}") from None


def wait_for_step(run_dir, step, timeout=240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / "metrics.jsonl").exists() and max(read_metrics(run_dir), default=0) >= step:
            return
        time.sleep(0.1)
    raise AssertionError(f"step {step} not reached in {timeout} s")


@pytest.fixture(scope="module")
def reference(cluster, small_dataset, tmp_path_factory):
    """1 node x 2 processes, uninterrupted: (run dir, losses)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    job = submit(cluster, small_dataset, run_dir, "--nodes", 1, "--procs-per-node", 2)
    info = finished(cluster, run_dir, job)
    assert info["JobState"] == "COMPLETED", log_of(run_dir, job)
    return run_dir, job, logged_losses(run_dir)


def test_single_node_job_runs_to_completion(cluster, reference):
    run_dir, job, losses = reference
    assert len(losses) == 24
    assert json.loads((run_dir / "summary.json").read_text())["stopped_by"] == "end"
    snapshot = run_dir / "job" / "1"
    assert "commit: " in (snapshot / "code.txt").read_text()
    assert "torch==" in (snapshot / "packages.txt").read_text()
    assert (snapshot / "config.yaml").read_text() == (run_dir / "config.yaml").read_text()
    assert (snapshot / "train.sbatch").read_text() == (run_dir / "train.sbatch").read_text()
    status = graft(cluster, "slurm", "status", run_dir).stdout
    assert f"job {job}" in status and "COMPLETED" in status and "last step 24" in status, status
    assert "step     24" in graft(cluster, "slurm", "logs", run_dir).stdout


def test_two_nodes_signalled_requeue_resumes_with_the_same_losses(cluster, small_dataset, reference, tmp_path):
    """2 nodes x 1 process == 1 node x 2 processes, bitwise, also across a USR2 -> checkpoint -> requeue -> resume."""
    run_dir = tmp_path / "run"
    job = submit(cluster, small_dataset, run_dir, "--nodes", 2, "--procs-per-node", 1)
    wait_for_step(run_dir, 3)
    cluster.slurm("scancel", "--signal=USR2", "--batch", job)  # what --signal=B:USR2@T does before the limit
    info = finished(cluster, run_dir, job)
    log = log_of(run_dir, job)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", log
    assert "passing it to every rank" in log and "graft: checkpointed; requeueing" in log
    assert "gn[1-2]" in log and "2 node(s) x 1 process(es)" in log
    # Both nodes' torchrun got the signal from SLURM and passed it to their worker.
    assert log.count(f"Received {int(signal.SIGUSR2)} death signal, shutting down workers") == 2, log
    reasons = [checkpoint.read_meta(p)["reason"] for p in sorted((run_dir / "checkpoints").glob("step_*"))]
    assert reasons[-1] == "end"
    assert logged_losses(run_dir) == reference[2]


def test_node_lost_then_resume_on_the_remaining_node(cluster, small_dataset, reference, tmp_path):
    run_dir = tmp_path / "run"
    # The last rank (on gn2) stops before step 10, so the kill lands mid-run, after the checkpoint of step 8.
    job = submit(cluster, small_dataset, run_dir, "--nodes", 2, "--procs-per-node", 1,
                 "train.debug_fault.place=hang", "train.debug_fault.step=10", "train.debug_fault.rank=1")
    wait_for_step(run_dir, 9)
    assert checkpoint.latest_checkpoint(run_dir).name == "step_00000008"
    second = cluster.nodes[1]
    pids = cluster.node_pids(second, "launch.")
    assert pids, "no training process found on gn2"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    info = finished(cluster, run_dir, job)
    log = log_of(run_dir, job)
    assert info["JobState"] == "FAILED", log
    assert "error: graft: the training step failed" in log and "graft slurm submit --resume" in log

    out = graft(cluster, "slurm", "submit", "--resume", run_dir, "--nodes", 1, "train.debug_fault.place=null").stdout
    job2 = job_of(out)
    info = finished(cluster, run_dir, job2)
    assert info["JobState"] == "COMPLETED", log_of(run_dir, job2)
    assert "1 node(s) x 1 process(es)" in log_of(run_dir, job2)
    losses, want = logged_losses(run_dir), reference[2]
    assert losses[:8] == want[:8]  # before the loss: the same run
    # After it, world size 1 (4 micro-batches per step instead of 2 ranks x 2) trains the same samples, but each
    # rank draws its own dropout noise, so the losses agree only closely (measured: within 1.1e-3 relative).
    assert losses[8:] == pytest.approx(want[8:], rel=3e-3)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["step"] == 24 and summary["tokens"] == 24 * 16 * 32  # global batch 16 x seq_len 32


def test_watchdog_ends_a_hang_with_stacks_and_the_requeue_cap_stops_it(cluster, small_dataset, tmp_path):
    run_dir = tmp_path / "run"
    job = submit(cluster, small_dataset, run_dir, "--nodes", 1, "--procs-per-node", 2, "--max-requeues", 1,
                 "train.debug_fault.place=hang", "train.debug_fault.step=3", "train.debug_fault.rank=1",
                 "train.save_every=2", "train.hang_timeout_minutes=0.1")
    info = finished(cluster, run_dir, job)
    log = log_of(run_dir, job)
    assert info["JobState"] == "FAILED" and info["Restarts"] == "1" and info["ExitCode"] == "75:0", log
    assert log.count("graft: checkpointed; requeueing") == 1
    assert "--max-requeues=1" in log
    hung, waiting = (run_dir / "hang" / "stacks-rank1.txt").read_text(), (run_dir / "hang" / "stacks-rank0.txt")
    assert "forced_hang" in hung  # the rank that hung, at the line where it did
    assert "engine.py" in waiting.read_text() and "forced_hang" not in waiting.read_text()  # the one waiting for it
    assert checkpoint.latest_checkpoint(run_dir).name == "step_00000002"


def test_preflight_names_the_node_that_cannot_join(cluster, small_dataset, tmp_path):
    first, second = cluster.nodes
    run_dir = tmp_path / "run"
    cluster.cut_rendezvous(second, first)
    try:
        job = submit(cluster, small_dataset, run_dir, "--nodes", 2, "--procs-per-node", 1,
                     "--preflight-timeout", 8)
        info = finished(cluster, run_dir, job)
    finally:
        cluster.cut_rendezvous(second, first, cut=False)
    log = log_of(run_dir, job)
    assert info["JobState"] == "FAILED", log
    assert f"1 of 2 nodes did not join within 8 s: {second.name}; they were told to reach {first.addr}:" in log, log
    assert f"node {second.name} could not reach the rendezvous at {first.addr}:" in log
    assert not (run_dir / "metrics.jsonl").exists()


def test_job_array_trains_each_run_in_its_own_directory(cluster, small_dataset, tmp_path):
    from launch.slurm import submit_array
    from launch.slurm_script import SlurmOptions
    from pretrain.config import load_config

    run_dirs = [tmp_path / "a", tmp_path / "b"]
    configs = [load_config(TINY, [f"data.path={small_dataset}", "train.run_dir=unused", "train.max_steps=2",
                                  f"seed={seed}"]) for seed in (1, 2)]
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        job = submit_array(configs, run_dirs, SlurmOptions(nodes=1, procs_per_node=1))
    finally:
        del os.environ["SLURM_CONF"]
    for i, run_dir in enumerate(run_dirs):
        info = finished(cluster, run_dir, f"{job}_{i}")
        assert info["JobState"] == "COMPLETED", log_of(run_dir, f"{job}_{i}")
        assert len(logged_losses(run_dir)) == 2
        assert f"{run_dir}" in log_of(run_dir, f"{job}_{i}")
    assert logged_losses(run_dirs[0]) != logged_losses(run_dirs[1])  # each element ran its own config


def test_hostlist_expansion_matches_scontrol(cluster):
    from launch.slurm_hosts import expand_hostlist

    for hostlist in ("gn1", "gn[1-2]", "gpu[001-003,010],login[7-8]", "x1,y[01-02]"):
        names = cluster.slurm("scontrol", "show", "hostnames", hostlist).stdout.split()
        assert expand_hostlist(hostlist) == names, hostlist
