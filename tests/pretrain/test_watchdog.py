"""The hang watchdog under plain torchrun (graft train --nproc 2): a rank that stops forever makes every rank
write its stacks and leave with the requeue code; nothing is left running."""

import pytest

from conftest import REPO_ROOT, run_graft

TINY = REPO_ROOT / "configs" / "tiny.yaml"


@pytest.mark.slow
def test_forced_hang_writes_every_ranks_stack_and_exits_75(small_dataset, tmp_path):
    run_dir = tmp_path / "run"
    result = run_graft("train", TINY, f"data.path={small_dataset}", f"train.run_dir={run_dir}", "--nproc", "2",
                       "train.save_every=2", "train.debug_fault.place=hang",
                       "train.debug_fault.step=3", "train.debug_fault.rank=1", "train.hang_timeout_minutes=0.1",
                       check=False)
    assert result.returncode == 75, result.stderr[-3000:]
    assert "hang_timeout_minutes" in result.stdout
    for rank in (0, 1):
        stacks = (run_dir / "hang" / f"stacks-rank{rank}.txt").read_text()
        assert stacks.startswith(f"rank {rank}: no training step completed for ")
        assert "Thread" in stacks and "trainer.py" in stacks
    assert "forced_hang" in (run_dir / "hang" / "stacks-rank1.txt").read_text()


def test_hang_timeout_must_not_be_negative(small_dataset, tmp_path):
    result = run_graft("train", TINY, f"data.path={small_dataset}", f"train.run_dir={tmp_path}/r",
                       "train.hang_timeout_minutes=-1", check=False)
    assert result.returncode == 2 and "train.hang_timeout_minutes" in result.stderr
