"""`EngineConfig` (the `engine:` block) and the DeepSpeed JSON generated from it."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from data_pipeline.errors import UserError

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class EngineConfig:
    zero_stage: int = 2  # DeepSpeed ZeRO stage 0-3
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 uses dynamic loss scaling)
    global_batch_size: int = 32  # samples per optimizer step over all ranks: the one batch-size knob
    micro_batch_size: int = 16  # most samples per rank per forward pass; accumulation makes up the rest
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    offload_optimizer: bool = False  # keep optimizer state (and the fp32 master weights) in CPU memory
    offload_params: bool = False  # ZeRO-3 only: keep parameters in CPU memory between uses
    deepspeed: dict[str, Any] = field(default_factory=dict)  # extra DeepSpeed keys, merged over the generated ones

    def __post_init__(self):
        if self.zero_stage not in (0, 1, 2, 3):
            raise UserError(f"engine.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.precision not in PRECISIONS:
            raise UserError(f"engine.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.micro_batch_size <= 0 or self.global_batch_size <= 0:
            raise UserError("engine.micro_batch_size and engine.global_batch_size must be positive")
        if self.offload_optimizer and self.zero_stage == 0:
            raise UserError("engine.offload_optimizer needs engine.zero_stage 1, 2 or 3")
        if self.offload_params and self.zero_stage != 3:
            raise UserError("engine.offload_params needs engine.zero_stage=3")
        if self.grad_clip < 0:
            raise UserError(f"engine.grad_clip must be >= 0, got {self.grad_clip}")

    def micro_batch(self, world: int) -> int:
        """Samples per rank per forward pass: the largest divisor of the per-rank batch up to micro_batch_size."""
        if self.global_batch_size % world:
            raise UserError(f"engine.global_batch_size ({self.global_batch_size}) must be a multiple of the number "
                            f"of ranks ({world}); change it or --nproc")
        per_rank = self.global_batch_size // world
        return max(d for d in range(1, min(per_rank, self.micro_batch_size) + 1) if per_rank % d == 0)

    def accumulation(self, world: int) -> int:
        return self.global_batch_size // (world * self.micro_batch(world))


DS_BUCKET_ELEMENTS = int(5e8)  # DeepSpeed's default gradient-reduction bucket (elements)


def deepspeed_config(cfg: EngineConfig, world: int, load_universal: bool = False,
                     num_params: int = DS_BUCKET_ELEMENTS) -> dict:
    # DeepSpeed allocates its reduction bucket afresh every step; one larger than the model only costs (on CPU,
    # page faults on a new 2 GB mapping each step). A bucket of the model's size reduces in the same one piece.
    # Contiguous gradients copy every gradient into one buffer as backward produces it, to spare the GPU
    # allocator fragmentation; on CPU there is none to spare and the copy costs ~5% of a small model's step.
    zero: dict[str, Any] = {"stage": cfg.zero_stage, "reduce_bucket_size": min(DS_BUCKET_ELEMENTS, num_params),
                            "contiguous_gradients": torch.cuda.is_available()}
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if cfg.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    generated = {
        "train_batch_size": cfg.global_batch_size,
        "train_micro_batch_size_per_gpu": cfg.micro_batch(world),
        "gradient_accumulation_steps": cfg.accumulation(world),
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": zero,
        # Graft's AdamW (it can skip a step) also runs on offloaded state; DeepSpeed's CPUAdam is optional.
        "zero_force_ds_cpu_optimizer": False,
        "bf16": {"enabled": cfg.precision == "bf16"},
        "fp16": {"enabled": cfg.precision == "fp16", "loss_scale": 0, "initial_scale_power": 16,
                 "loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1},
        "checkpoint": {"load_universal": load_universal},
        "steps_per_print": 2**31 - 1,  # Graft does its own logging
        "wall_clock_breakdown": False,
    }
    return _deep_merge(generated, cfg.deepspeed)


def _deep_merge(base: dict, extra: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
