"""`graft slurm` against a real SLURM started by this module: munged, slurmctld and two slurmd's, each in a network
namespace of its own (tests/slurm/cluster.py), so that a 2-node job's rendezvous and gloo traffic cross a veth
link. One cluster for the whole module; jobs are tiny 2-process CPU trainings, dropout off, so that a run at
another world size trains on the same samples with the same weights and so the same losses up to the order of
its sums (the RNG state across a resume is tested with dropout in tests/test_end_to_end.py). Each job start
costs far more than its steps, so where one job can prove two things, it does."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from cluster import slurm_available, start_cluster
from conftest import REPO_ROOT, logged_losses
from pretrain import checkpoint
from pretrain.config import load_config, save_config
from pretrain.metrics import SUMMARY_FILE, read_metrics

pytestmark = pytest.mark.slow
TINY = REPO_ROOT / "configs" / "tiny.yaml"
STEPS = ["train.max_steps=24", "train.save_every=8", "train.log_every=1", "train.hang_timeout_minutes=5",
         "model.hidden_dropout=0", "model.attention_dropout=0"]
GLOBAL_BATCH = 16  # tiny.yaml's
RTOL_WORLD_SIZE = 1e-6  # float32 rounding (measured: 6e-8 at most); consecutive steps differ by 1e-4 and more

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


def logged_steps(run_dir) -> list[int]:
    """Every step in metrics.jsonl in the order logged: a step trained twice appears twice."""
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def wait_for_log(run_dir, job_id, text, timeout=240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = run_dir / "logs" / f"slurm-{job_id}.out"
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in the log of job {job_id} after {timeout} s")


@pytest.fixture(scope="module")
def hang_job(cluster, small_dataset, tmp_path_factory):
    """The watchdog test's job, submitted before the reference so that its waits (two hang timeouts, a
    requeue) overlap the reference's run; on gn1 only, so that killing gn2's processes never reaches it:
    (run dir, job id)."""
    run_dir = tmp_path_factory.mktemp("hang") / "run"
    job = submit(cluster, small_dataset, run_dir, "--nodes", 1, "--procs-per-node", 2, "--max-requeues", 1,
                 f"--sbatch=--nodelist={cluster.nodes[0].name}",
                 "train.debug_fault.place=hang", "train.debug_fault.step=3", "train.debug_fault.rank=1",
                 "train.save_every=2", "train.hang_timeout_minutes=0.1")
    return run_dir, job


@pytest.fixture(scope="module")
def reference(cluster, small_dataset, hang_job, tmp_path_factory):
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


def test_two_nodes_requeue_then_node_lost_then_resume_on_one_node(cluster, small_dataset, reference, tmp_path):
    """One 2-node x 1-process job: USR2 -> checkpoint -> requeue -> resume, then a node lost mid-run; then
    `--resume` on the remaining node. 2 nodes x 1 process == 1 node x 2 processes bitwise (across the requeue),
    no step is trained twice, and at world size 1 every step trains on the reference's samples."""
    run_dir = tmp_path / "run"
    job = submit(cluster, small_dataset, run_dir, "--nodes", 2, "--procs-per-node", 1)
    wait_for_step(run_dir, 3)
    cluster.slurm("scancel", "--signal=USR2", "--batch", job)  # what --signal=B:USR2@T does before the limit
    wait_for_log(run_dir, job, "graft: checkpointed; requeueing")
    signalled = checkpoint.latest_checkpoint(run_dir)
    assert checkpoint.read_meta(signalled)["reason"].startswith("signal"), log_of(run_dir, job)
    # The requeued attempt (SLURM starts it ~10 s later) re-reads the run's config: only it gets the hang, as a
    # hung rank would never see the signal. Its last rank (on gn2) stops before step 10, after the checkpoint
    # of step 8, so that the kill lands mid-run.
    config = run_dir / "config.yaml"
    save_config(load_config(config, ["train.debug_fault.place=hang", "train.debug_fault.step=10",
                                          "train.debug_fault.rank=1"]), config)
    wait_for_step(run_dir, 9)
    assert checkpoint.latest_checkpoint(run_dir).name == "step_00000008"
    second = cluster.nodes[1]
    pids = cluster.node_pids(second, "launch.")
    assert pids, "no training process found on gn2"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    info = finished(cluster, run_dir, job)
    log = log_of(run_dir, job)
    assert info["JobState"] == "FAILED" and info["Restarts"] == "1", log
    assert "passing it to every rank" in log and "graft: checkpointed; requeueing" in log and "(restart 1)" in log
    assert "gn[1-2]" in log and "2 node(s) x 1 process(es)" in log
    # Both nodes' torchrun got the signal from SLURM and passed it to their worker.
    assert log.count(f"Received {int(signal.SIGUSR2)} death signal, shutting down workers") == 2, log
    assert "error: graft: the training step failed" in log and "graft slurm submit --resume" in log
    want = reference[2]
    assert logged_losses(run_dir) == want[:9]  # bitwise, the requeue included
    assert logged_steps(run_dir) == list(range(1, 10))  # resumed at the signal's checkpoint: nothing redone

    out = graft(cluster, "slurm", "submit", "--resume", run_dir, "--nodes", 1, "train.debug_fault.place=null").stdout
    job2 = job_of(out)
    info = finished(cluster, run_dir, job2)
    assert info["JobState"] == "COMPLETED", log_of(run_dir, job2)
    assert "1 node(s) x 1 process(es)" in log_of(run_dir, job2)
    assert logged_steps(run_dir) == list(range(1, 10)) + list(range(9, 25))  # only step 9, after the loss
    # Each checkpoint of world size 1 is exactly 16 samples a step on from step 8's, whose loader position it
    # continued; the losses then match the reference's step for step. Not bitwise: one rank sums the global
    # batch's 4 micro-batches where two ranks summed 2 each and added those.
    for step in (16, 24):
        meta = checkpoint.read_meta(run_dir / "checkpoints" / f"step_{step:08d}")
        assert meta["world_size"] == 1 and meta["loader"]["consumed_samples"] == step * GLOBAL_BATCH, meta
    losses = logged_losses(run_dir)
    assert losses[:8] == want[:8]
    assert losses[8:] == pytest.approx(want[8:], rel=RTOL_WORLD_SIZE, abs=0)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["step"] == 24 and summary["tokens"] == 24 * GLOBAL_BATCH * 32  # x seq_len 32


def test_watchdog_ends_a_hang_with_stacks_and_the_requeue_cap_stops_it(cluster, hang_job):
    run_dir, job = hang_job
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
                     "--preflight-timeout", 4)
        info = finished(cluster, run_dir, job)
    finally:
        cluster.cut_rendezvous(second, first, cut=False)
    log = log_of(run_dir, job)
    assert info["JobState"] == "FAILED", log
    assert f"1 of 2 nodes did not join within 4 s: {second.name}; they were told to reach {first.addr}:" in log, log
    assert f"node {second.name} could not reach the rendezvous at {first.addr}:" in log
    assert not (run_dir / "metrics.jsonl").exists()


def test_sweep_runs_as_one_job_array_and_its_results_are_collected(cluster, small_dataset, heldout_dataset,
                                                                     tmp_path):
    """`graft sweep --backend slurm`: a 2-point grid submitted as one job array, each element training its own
    point in its own run directory; `graft scaling`'s reader then finds both results, and re-running the
    sweep finds both finished and submits nothing."""
    from launch.scaling_data import read_sweep_runs
    from launch.sweep import read_sweep

    sweep = tmp_path / "sweep"
    args = ["sweep", TINY, f"data.path={small_dataset}", f"train.eval_data={heldout_dataset}", "train.eval_batches=2",
            "train.max_steps=2", "engine.zero_stage=0", "--grid", "model.hidden_size=16,32", "--backend", "slurm",
            "--nproc", 1, "--out", sweep]
    out = graft(cluster, *args).stdout
    job = re.search(r"as SLURM job array (\d+)", out).group(1)
    run_dirs = [sweep / "runs" / point["name"] for point in read_sweep(sweep)["points"]]
    for i, run_dir in enumerate(run_dirs):
        info = finished(cluster, run_dir, f"{job}_{i}")
        log = log_of(run_dir, f"{job}_{i}")
        assert info["JobState"] == "COMPLETED", log
        assert f"{run_dir}" in log and "1 node(s) x 1 process(es)" in log
    runs, left_out = read_sweep_runs(sweep)
    assert not left_out and len(runs) == 2, left_out
    assert runs[0].params < runs[1].params and all(run.loss > 0 for run in runs)  # each element its own point
    again = graft(cluster, *args).stdout
    assert "2 points, 2 finished, 0 to train" in again and "nothing to submit" in again, again

    # Point 0 as if its job had ended after a checkpoint but before the end (it continues from the checkpoint);
    # point 1 as if it had died before its first checkpoint (its files are set aside and it starts afresh).
    (run_dirs[0] / SUMMARY_FILE).unlink()
    (run_dirs[1] / SUMMARY_FILE).unlink()
    shutil.rmtree(run_dirs[1] / "checkpoints")
    out = graft(cluster, *args).stdout
    assert "2 points, 0 finished, 2 to train" in out, out
    resumed = re.search(r"resubmitted \S+ to continue from its checkpoint: SLURM job (\d+)", out).group(1)
    array = re.search(r"as SLURM job array (\d+)", out).group(1)
    assert "submitted 1 points" in out and list(sweep.glob(f"runs/{run_dirs[1].name}.failed-*")), out
    for run_dir, job in ((run_dirs[0], resumed), (run_dirs[1], array)):
        assert finished(cluster, run_dir, job)["JobState"] == "COMPLETED", log_of(run_dir, job)
    assert "2 points, 2 finished, 0 to train" in graft(cluster, *args).stdout


def test_hostlist_expansion_matches_scontrol(cluster):
    from launch.slurm_hosts import expand_hostlist

    for hostlist in ("gn1", "gn[1-2]", "gpu[001-003,010],login[7-8]", "x1,y[01-02]"):
        names = cluster.slurm("scontrol", "show", "hostnames", hostlist).stdout.split()
        assert expand_hostlist(hostlist) == names, hostlist
