"""The training engine: Accelerate with its DeepSpeed plugin. The only module that drives DeepSpeed.

It turns the run config into a DeepSpeed JSON, wraps model and optimizer, runs one optimizer step over a
list of micro-batches, and saves/loads the engine's share of a checkpoint.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from data_pipeline.errors import UserError

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class EngineConfig:
    zero_stage: int = 2  # DeepSpeed ZeRO stage 0-3
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 uses dynamic loss scaling)
    micro_batch_size: int = 16  # samples per rank per forward pass
    global_batch_size: int = 32  # samples per optimizer step over all ranks; accumulation follows from it
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    deepspeed: dict[str, Any] = field(default_factory=dict)  # extra DeepSpeed keys, merged over the generated ones

    def __post_init__(self):
        if self.zero_stage not in (0, 1, 2, 3):
            raise UserError(f"engine.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.precision not in PRECISIONS:
            raise UserError(f"engine.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.micro_batch_size <= 0 or self.global_batch_size <= 0:
            raise UserError("engine.micro_batch_size and engine.global_batch_size must be positive")

    def accumulation(self, world: int) -> int:
        per_pass = self.micro_batch_size * world
        if self.global_batch_size % per_pass:
            raise UserError(f"engine.global_batch_size ({self.global_batch_size}) must be a multiple of "
                            f"engine.micro_batch_size x ranks ({self.micro_batch_size} x {world} = {per_pass})")
        return self.global_batch_size // per_pass


def deepspeed_config(cfg: EngineConfig, world: int) -> dict:
    generated = {
        "train_batch_size": cfg.global_batch_size,
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.accumulation(world),
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": cfg.precision == "bf16"},
        "fp16": {"enabled": cfg.precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
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


def init_distributed() -> tuple[int, int]:
    """(rank, world). Outside torchrun, becomes a world of one so the same code path runs in-process."""
    if "LOCAL_RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", str(_free_port())))
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Engine:
    """Model, optimizer and schedule under DeepSpeed, driven through Accelerate."""

    def __init__(self, cfg: EngineConfig, world: int, run_dir: Path,
                 model: torch.nn.Module, optimizer: torch.optim.Optimizer):
        from accelerate import Accelerator
        from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

        self.ds_config = deepspeed_config(cfg, world)
        self.accumulation = self.ds_config["gradient_accumulation_steps"]
        # On CPU, Accelerate only treats the run as distributed when told the backend (gloo).
        handlers = [] if torch.cuda.is_available() else [InitProcessGroupKwargs(backend="gloo")]
        self.accelerator = Accelerator(deepspeed_plugin=DeepSpeedPlugin(hf_ds_config=self.ds_config),
                                       kwargs_handlers=handlers)
        if self.accelerator.is_main_process:
            (run_dir / "deepspeed.json").write_text(json.dumps(self.ds_config, indent=1))
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.device = self.accelerator.device

    def step(self, micro_batches: list[dict], loss_fn: Callable[[torch.nn.Module, dict], torch.Tensor],
             lr: float) -> tuple[float, float]:
        """One optimizer step at learning rate `lr` over `accumulation` micro-batches.

        Returns (mean loss over micro-batches and ranks, global grad norm). The caller derives `lr` from the
        step number, so the schedule has no state to checkpoint (and Accelerate's scheduler wrapper, which
        steps once per process, stays out of the way).
        """
        assert len(micro_batches) == self.accumulation
        for group in self.model.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        total = torch.zeros((), device=self.device)
        for batch in micro_batches:
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            with self.accelerator.accumulate(self.model):
                loss = loss_fn(self.model, batch)
                self.accelerator.backward(loss)
            total += loss.detach().float()
        mean = self.accelerator.reduce(total, reduction="mean") / self.accumulation
        norm = self.model.get_global_grad_norm()
        return float(mean), float(norm) if norm is not None else float("nan")

    def save(self, directory: Path) -> None:
        """Every rank writes its shard of model and optimizer state under `directory`."""
        self.model.save_checkpoint(str(directory), tag="engine")

    def load(self, directory: Path) -> None:
        path, _ = self.model.load_checkpoint(str(directory), tag="engine", load_optimizer_states=True)
        if path is None:
            raise UserError(f"{directory}/engine holds no DeepSpeed checkpoint; it is incomplete or corrupt")

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()
