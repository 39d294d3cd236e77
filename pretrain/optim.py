"""AdamW with weight-decay exclusions (and a step it can skip), and the learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from data_pipeline.errors import UserError

SCHEDULES = ("linear", "cosine", "inverse_sqrt", "constant", "wsd")


@dataclass
class OptimConfig:
    lr: float = 5e-4  # peak learning rate (AdamW), reached at the end of warmup
    weight_decay: float = 0.01  # not applied to biases and norm weights
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])  # AdamW's beta1, beta2
    eps: float = 1e-6  # AdamW's epsilon
    warmup_steps: int = 100  # linear warmup from 0 to lr
    # after warmup: linear | cosine decay to min_lr_ratio * lr at max_steps; inverse_sqrt: lr * sqrt(warmup / step)
    # (never below min_lr_ratio * lr); constant; wsd (warmup-stable-decay): lr until the last decay_fraction of
    # the steps, then linear to min_lr_ratio * lr at max_steps
    schedule: str = "linear"
    min_lr_ratio: float = 0.0  # floor of the decay, as a share of lr
    decay_fraction: float = 0.2  # wsd: the share of max_steps over which the learning rate decays

    def __post_init__(self):
        if self.lr <= 0:
            raise UserError(f"optim.lr must be positive, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.warmup_steps < 0:
            raise UserError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise UserError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0 < self.decay_fraction <= 1:
            raise UserError(f"optim.decay_fraction must be in (0, 1], got {self.decay_fraction}")
        if len(self.betas) != 2:
            raise UserError(f"optim.betas must hold two numbers, got {list(self.betas)}")


class AdamW(torch.optim.AdamW):
    """torch's AdamW whose next step() can be skipped: weights and moments stay exactly as they were.

    The engine sets `skip_next_step` when the ranks agree a step's loss was not finite; DeepSpeed's ZeRO
    wrappers call this step() on their fp32 partitions, so the skip holds at every stage.
    """

    skip_next_step = False

    @torch.no_grad()
    def step(self, closure=None):
        if self.skip_next_step:
            return None
        return super().step(closure)


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> AdamW:
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            # Matrices decay; biases and norm scales (1-d) do not, as in BERT. A parameter built under ZeRO-3's
            # zero.Init is already partitioned (an empty tensor here); it keeps its full shape in ds_shape.
            (decay if len(getattr(param, "ds_shape", param.shape)) >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # Fused: one pass over each tensor instead of one per operation, several times faster on ZeRO's flat
    # partitions (which do not fit in cache); the same kernel HF Trainer uses by default.
    return AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=True)


def learning_rate(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """The learning rate of optimizer step `step` (0-based): a pure function, so resume needs no state."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "inverse_sqrt":
        return cfg.lr * max(cfg.min_lr_ratio, math.sqrt(max(1, cfg.warmup_steps) / (step + 1)))
    if cfg.schedule == "wsd":  # linear too, but only over the last decay_fraction of the steps
        decay_steps = max(1, round(cfg.decay_fraction * max_steps))
        progress = min(1.0, max(0.0, (step - (max_steps - decay_steps)) / decay_steps))
    else:
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1.0 - progress
    return cfg.lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape)
