"""The engine's config: batch arithmetic, the generated DeepSpeed JSON, and the errors a user can cause."""

import pytest

from data_pipeline.errors import UserError
from pretrain.engine import Engine, fp16_supported
from pretrain.engine_config import EngineConfig, deepspeed_config


@pytest.mark.parametrize("global_batch, micro_max, world, micro, accumulation", [
    (16, 4, 2, 4, 2), (16, 4, 1, 4, 4), (32, 16, 2, 16, 1), (24, 5, 2, 4, 3), (12, 64, 4, 3, 1), (7, 4, 1, 1, 7)])
def test_micro_batch_and_accumulation_follow_from_the_global_batch(global_batch, micro_max, world, micro, accumulation):
    cfg = EngineConfig(global_batch_size=global_batch, micro_batch_size=micro_max)
    assert (cfg.micro_batch(world), cfg.accumulation(world)) == (micro, accumulation)
    assert cfg.micro_batch(world) * cfg.accumulation(world) * world == global_batch


def test_global_batch_must_divide_by_the_ranks():
    with pytest.raises(UserError, match="engine.global_batch_size"):
        EngineConfig(global_batch_size=16).micro_batch(3)


def test_generated_deepspeed_config_and_passthrough():
    cfg = EngineConfig(zero_stage=3, precision="bf16", global_batch_size=64, micro_batch_size=8, grad_clip=0.5,
                       offload_optimizer=True, offload_params=True,
                       deepspeed={"zero_optimization": {"overlap_comm": True}, "fp16": {"enabled": False}})
    ds = deepspeed_config(cfg, world=4, load_universal=True)
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (64, 8, 2)
    assert ds["gradient_clipping"] == 0.5 and ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    zero = ds["zero_optimization"]
    assert zero["stage"] == 3 and zero["overlap_comm"] is True  # the extra key is merged, the generated ones stay
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
    assert ds["checkpoint"]["load_universal"] is True
    fp16 = deepspeed_config(EngineConfig(precision="fp16"), world=1)["fp16"]
    assert fp16["enabled"] and fp16["loss_scale"] == 0  # 0: dynamic loss scaling


def test_reduce_bucket_is_no_larger_than_the_model():
    assert deepspeed_config(EngineConfig(), world=2, num_params=1234)["zero_optimization"]["reduce_bucket_size"] == 1234
    assert deepspeed_config(EngineConfig(), world=2, num_params=10**10)["zero_optimization"]["reduce_bucket_size"] \
        == int(5e8)  # DeepSpeed's default
    extra = EngineConfig(deepspeed={"zero_optimization": {"reduce_bucket_size": 99}})
    assert deepspeed_config(extra, world=2, num_params=1234)["zero_optimization"]["reduce_bucket_size"] == 99


@pytest.mark.skipif(fp16_supported(), reason="this machine's DeepSpeed accelerator runs fp16")
def test_fp16_where_deepspeed_has_none_is_a_clear_error(tmp_path):
    """DeepSpeed 0.19's CPU accelerator has fp16 only with oneDNN fp16 kernels (AVX512-FP16 / AMX-FP16)."""
    import torch

    from pretrain.optim import OptimConfig, build_optimizer

    model = torch.nn.Linear(4, 4)
    with pytest.raises(UserError, match="engine.precision=fp16.*bf16"):
        Engine(EngineConfig(precision="fp16"), 1, tmp_path, model, build_optimizer(model, OptimConfig()))


@pytest.mark.parametrize("kwargs, key", [
    ({"zero_stage": 4}, "engine.zero_stage"), ({"precision": "fp8"}, "engine.precision"),
    ({"offload_params": True, "zero_stage": 2}, "engine.offload_params"),
    ({"offload_optimizer": True, "zero_stage": 0}, "engine.offload_optimizer"),
    ({"grad_clip": -1.0}, "engine.grad_clip"), ({"micro_batch_size": 0}, "engine.micro_batch_size")])
def test_bad_values_are_named(kwargs, key):
    with pytest.raises(UserError, match=key):
        EngineConfig(**kwargs)
