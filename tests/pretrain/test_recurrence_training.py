"""Transformer-XL recurrence in real training: real DeepSpeed on 2 CPU processes, lanes from the loader, the
memory saved in every checkpoint by global lane. Bitwise means `==` on the logged float32 losses."""

import json

import pytest
import torch

from conftest import REPO_ROOT, logged_losses, run_graft

TINY = REPO_ROOT / "configs" / "tiny.yaml"
XL = ["model.positions=xl", "model.recurrence.mem_len=48", "data.lanes=true", "model.hidden_dropout=0",
      "model.attention_dropout=0", "train.max_steps=4", "train.save_every=2"]
pytestmark = pytest.mark.slow


def args(dataset, stage, *extra):
    return [TINY, f"data.path={dataset}", f"engine.zero_stage={stage}", *XL, *extra]


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_interrupted_recurrent_run_resumes_bitwise(small_dataset, tmp_path, stage):
    common = args(small_dataset, stage, "--nproc", "2")
    run_graft("train", *common, f"train.run_dir={tmp_path / 'A'}")
    run_graft("train", *common, f"train.run_dir={tmp_path / 'B'}", "train.exit_at_step=2")
    saved = sorted((tmp_path / "B" / "checkpoints" / "step_00000002" / "memory").iterdir())
    assert [p.name for p in saved] == ["rank_00000.pt", "rank_00001.pt"]
    memory = torch.load(saved[1], weights_only=True)
    assert memory["lanes"].tolist() == [4, 5, 6, 7]  # rank 1's rows are global lanes 4-7 (micro-batch 4)
    assert memory["layers"][0].shape == (4, 48, 32) and len(memory["layers"]) == 2
    run_graft("train", *common, f"train.run_dir={tmp_path / 'B'}", "--resume")
    straight = logged_losses(tmp_path / "A")
    assert len(straight) == 4
    assert logged_losses(tmp_path / "B") == straight


def test_memory_changes_the_losses_and_follows_lanes_across_world_sizes(small_dataset, tmp_path):
    common = args(small_dataset, 2)
    run_graft("train", *common, f"train.run_dir={tmp_path / 'A'}", "--nproc", "2")
    # Without memory (the same relative positions, nothing carried across segments) every step differs: even
    # the first, whose second micro-batch (accumulation 2) continues the first's lanes.
    run_graft("train", *common, "model.recurrence.mem_len=0", "data.lanes=true",
              f"train.run_dir={tmp_path / 'none'}", "--nproc", "2")
    straight, without = logged_losses(tmp_path / "A"), logged_losses(tmp_path / "none")
    assert len(straight) == len(without) == 4 and all(a != b for a, b in zip(straight, without, strict=True))
    # 2 ranks -> 1 rank: the same 8 lanes as one micro-batch of 8; each lane's memory moves with it.
    run_graft("train", *common, f"train.run_dir={tmp_path / 'B'}", "train.exit_at_step=2", "--nproc", "2")
    run_graft("train", *common, f"train.run_dir={tmp_path / 'B'}", "engine.micro_batch_size=8", "--resume",
              "--nproc", "1")
    assert json.loads((tmp_path / "B" / "deepspeed.json").read_text())["train_micro_batch_size_per_gpu"] == 8
    torch.testing.assert_close(logged_losses(tmp_path / "B"), straight, rtol=1e-5, atol=0)
    # 1 rank -> 2 ranks.
    run_graft("train", *common, "engine.micro_batch_size=8", f"train.run_dir={tmp_path / 'C'}",
              "train.exit_at_step=2", "--nproc", "1")
    run_graft("train", *common, f"train.run_dir={tmp_path / 'C'}", "engine.micro_batch_size=4", "--resume",
              "--nproc", "2")
    torch.testing.assert_close(logged_losses(tmp_path / "C"), straight, rtol=1e-5, atol=0)


def test_recurrence_needs_lanes(small_dataset, tmp_path):
    result = run_graft("train", TINY, f"data.path={small_dataset}", "model.positions=xl",
                       "model.recurrence.mem_len=32", f"train.run_dir={tmp_path}", check=False)
    assert result.returncode == 2 and "data.lanes=true" in result.stderr
