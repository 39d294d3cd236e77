"""Exact resume at every ZeRO stage, however the run was interrupted: real DeepSpeed, 2 CPU processes.

Each stage is interrupted a different way, so each run serves two purposes:
    stage 0: train.exit_at_step (dropout on: the restored RNG must reproduce the dropout masks); and a 1-rank
             run resumed on 2
    stage 1: SIGUSR1 mid-run through the launcher and torchrun -> checkpoint, exit code 75; then resumed on 2
             ranks and on 1
    stage 2: the same with SIGTERM; tests/test_end_to_end.py (exit_at_step, dropout on); bf16 with optimizer
             offload
    stage 3: kill -9 of every process while a checkpoint is being written; and a 1-rank run resumed on 2
All but stage 0 run with LayerDrop, whose draw must resume too (and, at ZeRO-3 and with optimizer offload,
a skipped layer must not get its previous step's gradient again, which a resumed run does not have).
Bitwise means `==` on the logged float32 losses (fp32 on CPU, same data, masking noise and RNG state).
"""

import json
import os
import signal
import time

import pytest
import torch

from conftest import REPO_ROOT, logged_losses, process_tree, run_graft, signal_tree, start_graft
from pretrain.checkpoint import read_model_weights
from pretrain.metrics import read_metrics
from pretrain.signals import REQUEUE_EXIT_CODE

TINY = REPO_ROOT / "configs" / "tiny.yaml"
NO_DROPOUT = ["model.hidden_dropout=0", "model.attention_dropout=0"]
# Seed 70 makes each of the first 12 steps skip one or both of tiny.yaml's 2 layers, so the first step after
# each resume below leaves a layer without gradient.
LAYERDROP = ["model.layerdrop=0.5", "seed=70"]
pytestmark = pytest.mark.slow


def common(dataset, stage, *extra):
    return [TINY, f"data.path={dataset}", f"engine.zero_stage={stage}", *extra]


def wait_for(condition, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def test_stage0_exit_and_resume_is_bitwise_with_evaluation(small_dataset, heldout_dataset, tmp_path):
    args = common(small_dataset, 0, f"train.eval_data={heldout_dataset}", "train.eval_every=2", "--nproc", "2")
    run_graft("train", *args, f"train.run_dir={tmp_path / 'A'}")
    run_graft("train", *args, f"train.run_dir={tmp_path / 'B'}", "train.exit_at_step=3")
    assert (tmp_path / "B" / "checkpoints" / "latest").read_text() == "step_00000003"
    run_graft("train", *args, f"train.run_dir={tmp_path / 'B'}", "--resume")
    assert len(logged_losses(tmp_path / "A")) == 6
    assert logged_losses(tmp_path / "B") == logged_losses(tmp_path / "A")
    evals = {s: r["eval_loss"] for s, r in read_metrics(tmp_path / "A").items() if "eval_loss" in r}
    assert sorted(evals) == [2, 4, 6] and evals[6] < evals[2]  # held-out loss falls as the model trains
    resumed = read_metrics(tmp_path / "B")  # also evaluated at step 3, where its first session ended
    assert {s: resumed[s]["eval_loss"] for s in evals} == evals
    summary = json.loads((tmp_path / "B" / "summary.json").read_text())
    assert summary["final_eval_loss"] == evals[6] and summary["step"] == 6 and summary["stopped_by"] == "end"


def test_bf16_with_optimizer_offload_resumes_bitwise(small_dataset, tmp_path):
    """bf16 (what runs on CPU; fp16 needs a GPU) with the optimizer state offloaded, at ZeRO-2."""
    args = common(small_dataset, 2, "engine.precision=bf16", "engine.offload_optimizer=true", *LAYERDROP,
                  "--nproc", "2")
    run_graft("train", *args, f"train.run_dir={tmp_path / 'A'}")
    run_graft("train", *args, f"train.run_dir={tmp_path / 'B'}", "train.exit_at_step=3")
    run_graft("train", *args, f"train.run_dir={tmp_path / 'B'}", "--resume")
    ds = json.loads((tmp_path / "A" / "deepspeed.json").read_text())
    assert ds["bf16"]["enabled"] and ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert len(logged_losses(tmp_path / "A")) == 6
    assert logged_losses(tmp_path / "B") == logged_losses(tmp_path / "A")


@pytest.fixture(scope="module", params=[(1, "SIGUSR1"), (2, "SIGTERM")], ids=["stage1-SIGUSR1", "stage2-SIGTERM"])
def signalled(request, small_dataset, tmp_path_factory):
    """The signal to `graft train --nproc 2` once step 2 is logged; returns (root, stage, signal name, exit code,
    stop step, log). The run dir is root/B."""
    stage, name = request.param
    root = tmp_path_factory.mktemp(f"stage{stage}")
    run = root / "B"
    args = common(small_dataset, stage, *NO_DROPOUT, *LAYERDROP, "train.max_steps=300", "train.save_every=100",
                  "--nproc", "2")
    proc = start_graft("train", *args, f"train.run_dir={run}", log=root / "B.log")
    wait_for(lambda: (run / "metrics.jsonl").is_file() and len(read_metrics(run)) >= 2, what="step 2")
    proc.send_signal(getattr(signal, name))
    code = proc.wait(timeout=300)
    latest = (run / "checkpoints" / "latest").read_text()
    return root, stage, name, code, int(latest.removeprefix("step_")), (root / "B.log").read_text()


def test_signal_checkpoints_at_a_step_boundary_and_asks_for_requeue(signalled):
    root, _, name, code, stopped, log = signalled
    assert code == REQUEUE_EXIT_CODE, log[-3000:]
    assert 2 <= stopped < 300
    meta = json.loads((root / "B" / "checkpoints" / f"step_{stopped:08d}" / "train_state.json").read_text())
    assert meta["reason"] == f"signal {name}" and meta["train"]["step"] == stopped
    assert f"stopped by {name}" in log and "--resume" in log
    summary = json.loads((root / "B" / "summary.json").read_text())
    assert summary["stopped_by"] == f"signal {name}" and summary["step"] == stopped


def test_resume_after_signal_is_bitwise_and_continues_on_one_rank(small_dataset, signalled):
    root, stage, _, _, stopped, _ = signalled
    args = common(small_dataset, stage, *NO_DROPOUT, *LAYERDROP, "train.max_steps=300", "train.save_every=100",
                  f"train.exit_at_step={stopped + 2}")
    # The same run continued on 2 ranks, and (from a copy of its directory) on 1 rank.
    os.system(f"cp -r {root / 'B'} {root / 'one'}")
    run_graft("train", *args, f"train.run_dir={root / 'B'}", "--resume", "--nproc", "2")
    run_graft("train", *args, f"train.run_dir={root / 'one'}", "--resume", "--nproc", "1")
    run_graft("train", *args, f"train.run_dir={root / 'A'}", "--nproc", "2")  # never interrupted

    straight = logged_losses(root / "A")
    assert len(straight) == stopped + 2
    assert logged_losses(root / "B") == straight
    # On 1 rank the global batch (16) and the sample order stay; only the summation order differs.
    assert (root / "one" / "checkpoints" / f"step_{stopped:08d}" / "universal").is_dir()
    assert json.loads((root / "one" / "deepspeed.json").read_text())["gradient_accumulation_steps"] == 4
    torch.testing.assert_close(logged_losses(root / "one"), straight, rtol=1e-5, atol=0)


def test_stage0_one_rank_resumed_on_two(small_dataset, tmp_path):
    """Stage 0 keeps whole weights and optimizer state in every rank's checkpoint: read as they are."""
    args = common(small_dataset, 0, *NO_DROPOUT, "train.max_steps=4")
    run_graft("train", *args, f"train.run_dir={tmp_path / 'A'}", "--nproc", "2")
    run_graft("train", *args, f"train.run_dir={tmp_path / 'B'}", "train.exit_at_step=2", "--nproc", "1")
    run_graft("train", *args, f"train.run_dir={tmp_path / 'B'}", "--resume", "--nproc", "2")
    assert json.loads((tmp_path / "B" / "deepspeed.json").read_text())["gradient_accumulation_steps"] == 2
    assert not (tmp_path / "B" / "checkpoints" / "step_00000002" / "universal").exists()
    straight = logged_losses(tmp_path / "A")
    assert len(straight) == 4
    torch.testing.assert_close(logged_losses(tmp_path / "B"), straight, rtol=1e-5, atol=0)


@pytest.fixture(scope="module")
def killed_stage3(small_dataset, tmp_path_factory):
    """A ZeRO-3 run on 2 ranks, checkpointing every step, killed with SIGKILL (every process) while it writes
    a checkpoint; and the same run never interrupted. Returns (root, args, step being written when killed)."""
    root = tmp_path_factory.mktemp("stage3")
    run = root / "B"
    args = common(small_dataset, 3, *NO_DROPOUT, *LAYERDROP, "train.max_steps=300", "train.save_every=1",
                  "--nproc", "2")
    proc = start_graft("train", *args, f"train.run_dir={run}", log=root / "B.log")
    writing = None
    while writing is None and proc.poll() is None:
        # from the 4th checkpoint on, so that complete ones precede it (and `latest` has moved a few times)
        partial = [p for p in (run / "checkpoints").glob("step_*.tmp") if p.name >= "step_00000004"] \
            if (run / "checkpoints").is_dir() else []
        if partial:
            tree = process_tree(proc.pid)
            signal_tree(tree, signal.SIGSTOP)  # freeze every process, then look again: no race with the rename
            if partial[0].is_dir():
                writing = partial[0]
                signal_tree(tree, signal.SIGKILL)
            else:
                signal_tree(tree, signal.SIGCONT)
        time.sleep(0.001)
    proc.wait()
    assert writing is not None, "the run ended before a kill landed inside a checkpoint write"
    killed_at = int(writing.name.removeprefix("step_").removesuffix(".tmp"))
    run_graft("train", *args, f"train.run_dir={root / 'A'}", f"train.exit_at_step={killed_at + 1}")  # never killed
    return root, args, killed_at


def test_kill_during_checkpoint_leaves_latest_complete_and_resume_is_bitwise(killed_stage3):
    root, args, killed_at = killed_stage3
    checkpoints = root / "B" / "checkpoints"
    assert (checkpoints / f"step_{killed_at:08d}.tmp").is_dir()  # the partial checkpoint is still there
    assert (checkpoints / "latest").read_text() == f"step_{killed_at - 1:08d}"
    assert not (checkpoints / f"step_{killed_at:08d}").exists()

    # --resume starts from `latest`, deletes the partial checkpoint and redoes the steps after `latest`.
    run_graft("train", *args, f"train.run_dir={root / 'B'}", "--resume", f"train.exit_at_step={killed_at + 1}")
    straight = logged_losses(root / "A")
    assert len(straight) == killed_at + 1
    assert logged_losses(root / "B") == straight
    assert sorted(p.name for p in checkpoints.iterdir()) == \
        ["latest", f"step_{killed_at:08d}", f"step_{killed_at + 1:08d}"]


def test_stage3_one_rank_resumed_on_two(small_dataset, killed_stage3, tmp_path):
    root, args, killed_at = killed_stage3
    one_rank = [a for a in args if a not in ("--nproc", "2")]
    run_graft("train", *one_rank, f"train.run_dir={tmp_path}", "train.exit_at_step=3", "--nproc", "1")
    run_graft("train", *one_rank, f"train.run_dir={tmp_path}", "--resume", f"train.exit_at_step={killed_at + 1}",
              "--nproc", "2")
    ds = json.loads((tmp_path / "deepspeed.json").read_text())
    assert ds["gradient_accumulation_steps"] == 2 and ds["checkpoint"]["load_universal"]
    straight = logged_losses(root / "A")  # 2 ranks throughout
    torch.testing.assert_close(logged_losses(tmp_path), straight, rtol=1e-5, atol=0)


def test_nonfinite_losses_are_skipped_then_stop_the_run(small_dataset, tmp_path):
    """NaN injected into rank 0's loss (train.debug_nan_steps) runs through the real backward and ZeRO-2 step."""
    result = run_graft("train", *common(small_dataset, 2, "--nproc", "2"), f"train.run_dir={tmp_path}",
                       "train.debug_nan_steps=[2,4,5]", "train.max_nonfinite_in_a_row=2", "train.save_every=100",
                       "train.save_every_minutes=0.00001", "train.keep_last=10", check=False)  # saves by the clock
    assert result.returncode == 2
    assert "not finite 2 steps in a row" in result.stderr
    assert f"the last good checkpoint is {tmp_path / 'checkpoints' / 'step_00000004'}" in result.stderr

    metrics = read_metrics(tmp_path)
    assert [metrics[s]["skipped_steps"] for s in (1, 2, 3, 4, 5)] == [0, 1, 1, 2, 3]
    assert [s for s in range(1, 6) if metrics[s]["loss"] != metrics[s]["loss"]] == [2, 4, 5]  # NaN
    assert {json.loads((tmp_path / "checkpoints" / f"step_{s:08d}" / "train_state.json").read_text())["reason"]
            for s in (1, 2, 3, 4)} == {"minutes"}
    weights = {s: read_model_weights(tmp_path / "checkpoints" / f"step_{s:08d}") for s in (1, 2, 3, 4)}
    same = lambda a, b: all(torch.equal(weights[a][k], weights[b][k]) for k in weights[a])  # noqa: E731
    assert same(1, 2) and same(3, 4)  # the skipped steps changed nothing
    assert not same(2, 3)  # while the good step in between trained
    assert all(torch.isfinite(w).all() for w in weights[4].values())
    assert not (tmp_path / "checkpoints" / "step_00000005").exists()
