"""Every failure ends the run promptly, with one clear message and its exit code, and leaves no process behind.

Faults are injected through train.debug_fault (a testing aid) or from outside (SIGKILL, a small tmpfs), on 1 and on
2 ranks of the real CLI. "No process left" scans /proc for any process whose command line names the run
directory: the graft process, torchrun, the ranks and their DataLoader workers (forks with the same command line),
also those that were reparented when their parent died.
"""

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, run_graft, start_graft
from pretrain.failures import CRASH_EXIT_CODE

TINY = REPO_ROOT / "configs" / "tiny.yaml"
BOUND_S = 240  # a run that fails must be over by then (start-up alone takes ~30 s on a busy 2-core machine)
LEFTOVER_GRACE_S = 15  # orphaned DataLoader workers notice their parent is gone within 5 s


def run_processes(run_dir: Path) -> list[int]:
    """Pids of live processes whose command line mentions `run_dir`."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(run_dir) in text and state != "Z":
            pids.append(int(cmdline.parent.name))
    return pids


def assert_nothing_left(run_dir: Path) -> None:
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    while run_processes(run_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = run_processes(run_dir)
    for pid in left:  # do not leave them to the next test either
        subprocess.run(["kill", "-9", str(pid)], check=False)
    assert not left, f"processes of the run left behind: {left}"


def train(dataset: Path, run_dir: Path, nproc: int, *overrides: str, log: Path | None = None) -> tuple[int, str, float]:
    """(exit code, last output line, seconds) of a `graft train` that must end within BOUND_S."""
    log = log or run_dir.parent / f"{run_dir.name}.log"
    start = time.monotonic()
    proc = start_graft("train", TINY, f"data.path={dataset}", f"train.run_dir={run_dir}", *overrides,
                       "--nproc", str(nproc), log=log)
    try:
        code = proc.wait(timeout=BOUND_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        for pid in run_processes(run_dir):  # torchrun and the ranks too, not to burden the next tests
            subprocess.run(["kill", "-9", str(pid)], check=False)
        raise AssertionError(f"the run did not end within {BOUND_S} s:\n{log.read_text()[-3000:]}") from None
    elapsed = time.monotonic() - start
    assert_nothing_left(run_dir)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    return code, lines[-1], elapsed


def fault(place: str, step: int, rank: int | None = None) -> list[str]:
    """The overrides of train.debug_fault."""
    return [f"train.debug_fault.place={place}", f"train.debug_fault.step={step}"] + \
        ([f"train.debug_fault.rank={rank}"] if rank is not None else [])


# (what fails, data.num_workers): the collator runs in the trainer's own process with 0 workers, in a
# DataLoader worker with 1.
EXCEPTIONS = {
    "main": ("main", 1, "RuntimeError: train.debug_fault: deliberate failure in the main loop at step 3"),
    "worker": ("collator", 1, "in the collator (a DataLoader worker)"),
    "collator": ("collator", 0, "in the collator (the main process)"),
}


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
@pytest.mark.parametrize("where", sorted(EXCEPTIONS))
def test_exception_ends_the_run(small_dataset, tmp_path, where, nproc):
    place, workers, message = EXCEPTIONS[where]
    code, last, _ = train(small_dataset, tmp_path / "run", nproc, *fault(place, 3), f"data.num_workers={workers}")
    assert code == CRASH_EXIT_CODE, last
    assert last.startswith("error: training crashed") and message in last, last


@pytest.mark.slow
def test_rank_raising_while_its_peer_waits_in_all_reduce(small_dataset, tmp_path):
    """Rank 1 raises 2 s into step 3, while rank 0 already waits in the step's all-reduce."""
    code, last, _ = train(small_dataset, tmp_path / "run", 2, *fault("main", 3, rank=1))
    assert code == CRASH_EXIT_CODE
    assert last.startswith("error: training crashed on rank 1: RuntimeError: train.debug_fault"), last
    log = (tmp_path / "run.log").read_text()
    assert "rank 0: a collective failed, another rank is gone or stuck" in log


@pytest.mark.slow
def test_rank_hanging_while_its_peer_waits_in_all_reduce(small_dataset, tmp_path):
    """Rank 1 stops for good before step 3 (it neither raises nor exits), while rank 0 goes on into the step's
    gradient all-reduce. Rank 0 gives up after engine.collective_timeout_s (DeepSpeed reduces in process groups
    of its own, which had torch's 30 minutes), and torchrun ends rank 1."""
    code, last, _ = train(small_dataset, tmp_path / "run", 2, *fault("hang", 3, rank=1),
                          "engine.collective_timeout_s=10")
    assert code == CRASH_EXIT_CODE, last
    assert last.startswith("error: rank 1 stopped responding: rank 0 waited for it in a collective until "
                           "engine.collective_timeout_s ran out (RuntimeError: "), last
    assert "Timed out waiting 10000ms" in last, last
    log = (tmp_path / "run.log").read_text()
    assert "torchrun: rank 1 (pid " in log and "ChildFailedError" not in log  # one line, not torchrun's report


def wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline and proc.poll() is None:
        metrics = run_dir / "metrics.jsonl"
        if metrics.is_file() and any(json.loads(line)["step"] >= step for line in metrics.read_text().splitlines()):
            return
        time.sleep(0.2)
    raise AssertionError(f"step {step} was never logged")


def rank_pid(run_dir: Path, rank: int) -> int:
    """The rank process itself (torchrun's child), not one of its DataLoader workers (the rank's children)."""
    for pid in run_processes(run_dir):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        parent_cmd = Path(f"/proc/{parent}/cmdline").read_bytes()
        if f"RANK={rank}".encode() in environ and b"launch.torchrun" in parent_cmd:
            return pid
    raise AssertionError(f"no rank {rank} process")


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_sigkill_of_a_rank_ends_the_run(small_dataset, tmp_path, nproc):
    """2 ranks: rank 1 is killed; rank 0 and torchrun end, and the launcher names rank 1. 1 rank: the process
    itself is killed; its DataLoader worker ends too."""
    run_dir = tmp_path / "run"
    proc = start_graft("train", TINY, f"data.path={small_dataset}", f"train.run_dir={run_dir}",
                       "train.max_steps=100000", "train.save_every=100000", "--nproc", str(nproc),
                       log=tmp_path / "run.log")
    wait_for_step(run_dir, 2, proc)
    victim = rank_pid(run_dir, 1) if nproc == 2 else proc.pid
    subprocess.run(["kill", "-9", str(victim)], check=True)
    code = proc.wait(timeout=BOUND_S)
    assert_nothing_left(run_dir)
    if nproc == 2:
        last = (tmp_path / "run.log").read_text().strip().splitlines()[-1]
        assert code == CRASH_EXIT_CODE
        assert last.startswith("error: rank 1 ended without an error of its own: killed from outside"), last
        assert "was ended by SIGKILL" in (tmp_path / "run.log").read_text()  # torchrun's line names the signal
    else:
        assert code == -signal.SIGKILL


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2.5 MiB tmpfs (this test runs as root): room for the run's files and one tiny.yaml checkpoint (~1.5
    MiB), not two."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2560k", "tmpfs", str(mount)]).returncode:
        pytest.fail("mounting a tmpfs needs root (CI runs the tests as root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_full_disk_while_checkpointing(small_dataset, small_tmpfs, nproc):
    """Step 3's checkpoint fits, step 6's does not: exit 2 naming the .tmp and the space, the .tmp gone,
    `latest` still step 3; with room again, --resume continues from it to the end."""
    run_dir = small_tmpfs / "run"
    code, last, _ = train(small_dataset, run_dir, nproc, log=small_tmpfs.parent / "run.log")
    checkpoints = run_dir / "checkpoints"
    assert code == 2, last
    assert last.startswith(f"error: no space left on device writing {checkpoints / 'step_00000006.tmp'} (it needs "
                           "about "), last
    assert " MiB free on " in last, last
    assert not list(checkpoints.glob("*.tmp"))
    assert (checkpoints / "latest").read_text() == "step_00000003"

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)
    result = run_graft("train", TINY, f"data.path={small_dataset}", f"train.run_dir={run_dir}", "--resume",
                       "--nproc", str(nproc))
    assert_nothing_left(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["step"] == 6 and summary["stopped_by"] == "end", result.stdout[-2000:]
    assert (checkpoints / "latest").read_text() == "step_00000006"
