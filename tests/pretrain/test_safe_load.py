"""Checkpoint files are read as data: tensors and the allowlisted DeepSpeed/numpy classes, nothing else."""

import os

import numpy as np
import pytest
import torch

from data_pipeline.errors import UserError
from pretrain import safe_load
from pretrain.checkpoint import _rng_state


class Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/graft-should-never-exist",))


def test_rng_states_and_deepspeed_classes_load(tmp_path):
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    np.random.seed(3)
    state = _rng_state()
    torch.save(state, tmp_path / "rng.pt")
    loaded = safe_load.load(tmp_path / "rng.pt")
    assert loaded["numpy"][0] == "MT19937" and np.array_equal(loaded["numpy"][1], state["numpy"][1])
    torch.save({"zero_stage": ZeroStageEnum.gradients, "scaler": LossScaler(1.0), "w": torch.ones(2)},
               tmp_path / "optim.pt")
    assert safe_load.load(tmp_path / "optim.pt")["zero_stage"] == ZeroStageEnum.gradients


def test_a_file_that_would_run_code_is_refused_naming_it(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(1), "x": Payload()}, path)
    with pytest.raises(UserError, match="evil.pt holds something other than tensors"):
        safe_load.load(path)
    assert not os.path.exists("/tmp/graft-should-never-exist")
