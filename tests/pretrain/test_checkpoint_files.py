"""The checkpoint directory's rules without DeepSpeed: `latest` names only complete checkpoints, keep-last-K."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO_ROOT
from data_pipeline.errors import UserError
from pretrain import checkpoint
from pretrain.signals import StopRequest


class FilesOnlyEngine:
    """Writes a marker where DeepSpeed would write shards: these tests are about Graft's files around them."""

    world = 1
    ds_config = {"checkpoint": {"load_universal": False}}

    def barrier(self):
        pass

    def save(self, directory):
        (directory / "engine").mkdir()
        (directory / "engine" / "shard.pt").write_bytes(b"x")


def test_save_renames_when_complete_and_prunes(tmp_path):
    engine = FilesOnlyEngine()
    for step in (1, 2, 3):
        checkpoint.save(engine, tmp_path, checkpoint.TrainState(step=step), {"consumed_samples": step}, 0,
                        keep_last=2, reason="periodic")
    root = checkpoint.checkpoints_dir(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000002", "step_00000003"]
    assert checkpoint.latest_checkpoint(tmp_path) == root / "step_00000003"
    meta = checkpoint.read_meta(root / "step_00000003")
    assert meta["train"]["step"] == 3 and meta["loader"] == {"consumed_samples": 3} and meta["world_size"] == 1


def test_a_leftover_partial_checkpoint_is_replaced(tmp_path):
    root = checkpoint.checkpoints_dir(tmp_path)
    (root / "step_00000001.tmp" / "engine").mkdir(parents=True)  # what a kill mid-save leaves
    checkpoint.save(FilesOnlyEngine(), tmp_path, checkpoint.TrainState(step=1), {}, 0, keep_last=2)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000001"]


def test_latest_naming_an_incomplete_checkpoint_is_an_error(tmp_path):
    root = checkpoint.checkpoints_dir(tmp_path)
    assert checkpoint.latest_checkpoint(tmp_path) is None
    (root / "step_00000005").mkdir(parents=True)
    (root / "latest").write_text("step_00000005")
    with pytest.raises(UserError, match="incomplete"):
        checkpoint.latest_checkpoint(tmp_path)


def test_the_latest_checkpoint_is_never_overwritten(tmp_path):
    checkpoint.save(FilesOnlyEngine(), tmp_path, checkpoint.TrainState(step=4), {}, 0, keep_last=2)
    with pytest.raises(AssertionError, match="latest"):
        checkpoint.save(FilesOnlyEngine(), tmp_path, checkpoint.TrainState(step=4), {}, 0, keep_last=2)
    assert json.loads((checkpoint.checkpoints_dir(tmp_path) / "step_00000004" / "train_state.json").read_text())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_preemption_signals_only_set_a_flag(sig):
    previous = signal.getsignal(sig)
    request = StopRequest()
    try:
        os.kill(os.getpid(), sig)  # real delivery; the default action would end the process
        # Delivery is asynchronous: another thread of this process may take the signal, and its handler then
        # runs in the main thread shortly after.
        deadline = time.monotonic() + 5
        while request.received is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert request.received == sig.name
    finally:
        request.close()
    assert signal.getsignal(sig) == previous  # restored when training ends



RACE = """
import os, signal, threading, time
from pretrain.signals import StopRequest
done = threading.Event()
for _ in range(4):  # started before StopRequest's mask, so they do not block the signals
    threading.Thread(target=done.wait, daemon=True).start()
for i in range(1000):  # the old blocking sigwait hung within 500 rounds in 8 of 9 tries
    request = StopRequest()
    os.kill(os.getpid(), signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while request.received is None and time.monotonic() < deadline:
        pass
    status = [l for l in open("/proc/self/status").read().splitlines() if l.startswith(("Sig", "Shd"))]
    assert request.received == "SIGUSR1", (i, request.received, signal.sigpending(), status)
    request.close()
"""


def test_a_signal_taken_by_another_thread_never_hangs_the_check():
    """With threads that do not block the signals (gloo's, pytest's), one of them may take a signal the main
    thread saw pending; checking for it must not then wait forever."""
    result = subprocess.run([sys.executable, "-c", RACE], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_partial_checkpoints_are_removed_at_start(tmp_path):
    checkpoint.save(FilesOnlyEngine(), tmp_path, checkpoint.TrainState(step=2), {}, 0, keep_last=2)
    root = checkpoint.checkpoints_dir(tmp_path)
    (root / "step_00000003.tmp" / "engine").mkdir(parents=True)
    checkpoint.remove_partial(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000002"]


def test_dataloader_workers_outlive_a_preemption_signal_to_every_process():
    """SLURM signals every process of the job; a DataLoader worker must not die of it (torch's workers exit on
    a SIGTERM that is not from their parent), or the rank fails before it can checkpoint."""
    from torch.utils.data import DataLoader

    from conftest import process_tree, signal_tree

    request = StopRequest()
    try:
        batches = iter(DataLoader(range(8), batch_size=2, num_workers=1))
        first = next(batches)  # the worker runs
        workers = [pid for pid in process_tree(os.getpid()) if pid != os.getpid()]
        assert workers
        signal_tree([os.getpid(), *workers], signal.SIGTERM)
        assert [b.tolist() for b in [first, *batches]] == [[0, 1], [2, 3], [4, 5], [6, 7]]
        assert request.received == "SIGTERM"
    finally:
        request.close()
