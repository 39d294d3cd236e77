"""AdamW's weight-decay groups and skippable step, and the learning-rate schedules."""

import math

import pytest
import torch

from data_pipeline.errors import UserError
from pretrain.optim import OptimConfig, build_optimizer, learning_rate


def test_weight_decay_excludes_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    decay, no_decay = build_optimizer(model, OptimConfig(weight_decay=0.1)).param_groups
    assert decay["weight_decay"] == 0.1 and [p.shape for p in decay["params"]] == [(4, 4)]
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3


def test_a_skipped_step_changes_neither_weights_nor_moments():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = build_optimizer(model, OptimConfig(lr=0.1))
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    before = [p.detach().clone() for p in model.parameters()], {k: {n: v.clone() for n, v in s.items()}
                                                                for k, s in optimizer.state.items()}
    model(torch.randn(5, 3)).sum().backward()
    optimizer.skip_next_step = True
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before[0], model.parameters(), strict=True))
    assert all(torch.equal(before[1][k][n], v) for k, s in optimizer.state.items() for n, v in s.items())
    optimizer.skip_next_step = False
    optimizer.step()
    assert not torch.equal(before[0][0], model.weight)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "inverse_sqrt", "constant", "wsd"])
def test_schedules_warm_up_linearly_then_decay(schedule):
    cfg = OptimConfig(lr=1.0, warmup_steps=10, schedule=schedule, min_lr_ratio=0.1)
    lrs = [learning_rate(s, cfg, max_steps=100) for s in range(100)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    after = lrs[10:]
    assert all(a >= b for a, b in zip(after, after[1:], strict=False)) and max(after) <= 1.0
    if schedule == "constant":
        assert set(after) == {1.0}
    else:
        assert min(after) >= 0.1 - 1e-12
    if schedule == "inverse_sqrt":
        assert lrs[39] == pytest.approx(math.sqrt(10 / 40))
    if schedule in ("linear", "cosine"):
        assert learning_rate(100, cfg, 100) == pytest.approx(0.1)


def test_wsd_holds_the_peak_until_its_decay_then_falls_linearly_to_the_floor():
    cfg = OptimConfig(lr=1.0, warmup_steps=10, schedule="wsd", min_lr_ratio=0.1, decay_fraction=0.25)
    lrs = [learning_rate(s, cfg, max_steps=100) for s in range(101)]
    assert set(lrs[10:76]) == {1.0}  # stable until step 75, the start of the last quarter
    assert lrs[80] == pytest.approx(1.0 - 0.9 * 5 / 25) and lrs[100] == pytest.approx(0.1)
    with pytest.raises(UserError, match="optim.decay_fraction"):
        OptimConfig(schedule="wsd", decay_fraction=0.0)


def test_bad_schedule_is_named():
    with pytest.raises(UserError, match="optim.schedule"):
        OptimConfig(schedule="step")
    with pytest.raises(UserError, match="optim.min_lr_ratio"):
        OptimConfig(min_lr_ratio=2.0)
