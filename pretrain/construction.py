"""Building the run's model: a pure `build_model`, then the weights of `model.init_from`, both inside the
construction context, so that at ZeRO-3 no rank ever holds the whole model."""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from pretrain.distributed import bound_collectives
from pretrain.engine_config import EngineConfig, collective_timeout, deepspeed_config
from pretrain.import_hf import load_pretrained
from pretrain.models import build_model
from pretrain.models.config import ModelConfig
from pretrain.models.objective_heads import attach_heads
from pretrain.output_bias import init_output_bias


def model_construction(cfg: EngineConfig, world: int) -> contextlib.AbstractContextManager:
    """The context to build the model in. At ZeRO-3, `deepspeed.zero.Init`: each module's parameters are
    partitioned over the ranks as soon as that module is built, so no rank ever holds the whole model. The
    models initialize weights through `Module.apply`, which zero.Init wraps to gather one module at a time;
    the same seed gives the same weights as a plain build. Other stages build plainly (replicated)."""
    if cfg.zero_stage != 3:
        return contextlib.nullcontext()
    import deepspeed

    # zero.Init partitions over the process group, so it must exist now; Accelerate then adopts it.
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo",
                               auto_mpi_discovery=False, verbose=False, timeout=collective_timeout(cfg))
    init = deepspeed.zero.Init(config_dict_or_path=deepspeed_config(cfg, world))
    bound_collectives(collective_timeout(cfg))  # any group zero.Init made (hpZ); it partitions over the world group
    return init


def construct_model(cfg: ModelConfig, engine: EngineConfig, world: int,
                    heads: Callable[[torch.nn.Module], dict] | None = None,
                    output_bias: torch.Tensor | None = None) -> torch.nn.Module:
    """The model of `cfg` (seed the torch RNG first), its MLM output bias set to `output_bias` if given,
    loaded from `cfg.init_from` when set (what that checkpoint lacks stays fresh), built and loaded inside
    `model_construction`; then the objective's pretraining-only `heads` (model -> name -> module, fresh), if
    any, attached to it."""
    with model_construction(engine, world):
        model = build_model(cfg)
        if output_bias is not None:
            init_output_bias(model, output_bias)
        if cfg.init_from:
            load_pretrained(model, cfg)
        if heads is not None:
            attach_heads(model, heads(model))
    return model
