"""The training engine: Accelerate with its DeepSpeed plugin. The only module that drives DeepSpeed.

It turns the run config into a DeepSpeed JSON, wraps model and optimizer, runs one optimizer step over a
list of micro-batches (skipping it when the loss is not finite on any rank), and saves/loads the engine's
share of a checkpoint, converting it to DeepSpeed's universal format to resume at another world size.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import resource
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from data_pipeline.errors import UserError

PRECISIONS = ("fp32", "bf16", "fp16")
ENGINE_DIR = "engine"  # DeepSpeed's tag inside a checkpoint directory
UNIVERSAL_DIR = "universal"  # the same state in DeepSpeed's world-size-free universal format


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
                               auto_mpi_discovery=False, verbose=False)
    return deepspeed.zero.Init(config_dict_or_path=deepspeed_config(cfg, world))


@dataclass
class StepResult:
    loss: float  # mean over micro-batches and ranks (NaN/inf when the step was skipped for it)
    terms: dict[str, float]  # the objective's loss terms, same averaging
    grad_norm: float
    skipped: bool  # not applied: a non-finite loss on some rank, or an fp16 overflow
    nonfinite: bool  # the loss itself was not finite on some rank
    loss_scale: float  # fp16's dynamic loss scale; 1 otherwise


class Engine:
    """Model, optimizer and schedule under DeepSpeed, driven through Accelerate."""

    def __init__(self, cfg: EngineConfig, world: int, run_dir: Path, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, load_universal: bool = False, unused_params: bool = False):
        """`unused_params`: some parameters may get no gradient in a step (LayerDrop skipped their layer)."""
        from accelerate import Accelerator
        from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

        assert hasattr(optimizer, "skip_next_step"), "the optimizer must be able to skip (pretrain.optim.AdamW)"
        check_precision(cfg)
        num_params = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())  # ZeRO-3 Init: full size
        self.ds_config = deepspeed_config(cfg, world, load_universal, num_params)
        self.accumulation = self.ds_config["gradient_accumulation_steps"]
        self.micro_batch = self.ds_config["train_micro_batch_size_per_gpu"]
        # On CPU, Accelerate only treats the run as distributed when told the backend (gloo).
        handlers = [] if torch.cuda.is_available() else [InitProcessGroupKwargs(backend="gloo")]
        self.accelerator = Accelerator(deepspeed_plugin=DeepSpeedPlugin(hf_ds_config=self.ds_config),
                                       gradient_accumulation_steps=self.accumulation, kwargs_handlers=handlers)
        if self.accelerator.is_main_process:
            (run_dir / "deepspeed.json").write_text(json.dumps(self.ds_config, indent=1))
        # The config's per-group hyperparameters (weight decay 0 for biases and norms): re-applied after a load.
        self._group_hyper = [{k: v for k, v in g.items() if k not in ("params", "lr")} for g in optimizer.param_groups]
        self.model, _ = self.accelerator.prepare(model, optimizer)
        self._optimizer = optimizer  # the innermost optimizer: DeepSpeed's wrappers call its step()
        self.device = self.accelerator.device
        self.world = world
        self._fp32_stage0 = cfg.zero_stage == 0 and cfg.precision == "fp32"
        self._unused_params = unused_params

    def step(self, micro_batches: list[dict], loss_fn: Callable[[torch.nn.Module, dict], Any],
             lr: float) -> StepResult:
        """One optimizer step at learning rate `lr` over `accumulation` micro-batches.

        `loss_fn` returns a scalar loss or a dict of scalar terms whose "loss" entry is minimised. The caller
        derives `lr` from the step number, so the schedule has no state to checkpoint (and Accelerate's
        scheduler wrapper, which steps once per process, stays out of the way). DeepSpeed's own backward/step
        are called directly so that the ranks can agree, before the update, to skip a step whose loss is not
        finite: the update is then never applied, and weights and optimizer state stay as they were.
        """
        assert len(micro_batches) == self.accumulation
        engine = self.model
        for group in engine.optimizer.param_groups:
            group["lr"] = lr
        engine.train()
        sums: dict[str, torch.Tensor] = {}
        for i, batch in enumerate(micro_batches):
            batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
            terms = loss_terms(loss_fn(engine, batch))
            engine.backward(terms["loss"])
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float()
            if i < len(micro_batches) - 1:
                engine.step()  # not a boundary: DeepSpeed only counts the micro-step
        names = sorted(sums)
        totals = self.all_reduce_sum(torch.stack([sums[n] for n in names]))  # NaN anywhere -> NaN everywhere
        means = {n: float(v) / (self.accumulation * self.world) for n, v in zip(names, totals)}
        nonfinite = not math.isfinite(means["loss"])
        # DeepSpeed reports no norm for plain fp32 at stage 0; its gradients are all-reduced by now.
        own_norm = _grad_norm(engine.module) if self._fp32_stage0 else None
        self._optimizer.skip_next_step = nonfinite
        engine.step()
        self._optimizer.skip_next_step = False
        if self._unused_params:
            self._clear_gradient_buffers()
        norm = own_norm if own_norm is not None else engine.get_global_grad_norm()
        norm = float(norm) if norm is not None else float("nan")
        skipped = nonfinite or not engine.was_step_applied()
        loss = means.pop("loss")
        return StepResult(loss, means, norm, skipped, nonfinite, self.loss_scale())

    def _clear_gradient_buffers(self) -> None:
        """Zero the gradient buffers DeepSpeed keeps between steps. At ZeRO-3, and with optimizer offload, a
        parameter that got no gradient in a step keeps its previous one there, and the step applies it again
        (and a resumed run, whose buffers start at zero, would not). Zeroed, such a parameter gets a zero
        gradient, as at ZeRO 0-2 without offload."""
        optimizer = self.model.optimizer
        buffers = [getattr(optimizer, "grad_partitions_flat_buffer", None)]  # ZeRO-3
        for name in ("fp32_partitioned_groups_flat", "single_partition_of_fp32_groups"):  # ZeRO-3 / 1-2 offload
            buffers += [group.grad for group in getattr(optimizer, name, [])]
        for buffer in buffers:
            if buffer is not None:
                buffer.zero_()

    def loss_scale(self) -> float:
        scale = getattr(self.model.optimizer, "loss_scale", None) if self.ds_config["fp16"]["enabled"] else None
        return float(scale) if scale is not None else 1.0

    @torch.no_grad()
    def evaluate(self, batches: list[dict], loss_fn: Callable) -> float:
        """Mean loss over `batches` on every rank, in eval mode (no dropout), averaged over ranks."""
        engine = self.model
        engine.eval()
        total = torch.zeros((), device=self.device)
        for batch in batches:
            total += loss_terms(loss_fn(engine, {k: v.to(self.device) for k, v in batch.items()}))["loss"].float()
        engine.train()
        return float(self.all_reduce_sum(total)) / (len(batches) * self.world)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.to(self.device)
        if self.world > 1:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def any_rank(self, *flags: bool) -> list[bool]:
        """Each flag, true if true on any rank: how ranks agree to stop or save at the same step."""
        summed = self.all_reduce_sum(torch.tensor([float(f) for f in flags]))
        return [bool(v > 0) for v in summed.tolist()]

    def peak_memory_bytes(self) -> int:
        """Peak accelerator memory allocated by this rank; on CPU, the process's peak resident set."""
        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated()
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def save(self, directory: Path) -> None:
        """Every rank writes its shard of model and optimizer state under `directory/engine`."""
        # ZeRO 1/2 need this in the client state to convert to the universal format later.
        self.model.save_checkpoint(str(directory), tag=ENGINE_DIR,
                                   client_state={"universal_checkpoint_info": {"universal_checkpoint_version": 0.2}})

    def load(self, directory: Path) -> None:
        """Load `directory/engine`, or `directory/universal` when the engine was built with load_universal."""
        tag = UNIVERSAL_DIR if self.ds_config["checkpoint"]["load_universal"] else ENGINE_DIR
        path, _ = self.model.load_checkpoint(str(directory), tag=tag, load_optimizer_states=True)
        if path is None:
            raise UserError(f"{directory}/{tag} holds no DeepSpeed checkpoint; it is incomplete or corrupt")
        # DeepSpeed's ZeRO-3 universal load (0.19) copies group 0's hyperparameters into every group, which
        # would put weight decay on biases and norms; the config's values win in any case (also if changed).
        assert len(self._optimizer.param_groups) == len(self._group_hyper)
        for group, hyper in zip(self._optimizer.param_groups, self._group_hyper):
            group.update(hyper)
        # It also gives every group the same `step` tensor, which AdamW increments in place once per group:
        # the second group's bias correction would then run ahead. One tensor each.
        for state in self._optimizer.state.values():
            if torch.is_tensor(state.get("step")):
                state["step"] = state["step"].clone()

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    def close(self) -> None:
        """Leave the process group once every rank is done (then a worker leaves through exit_process)."""
        self.barrier()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def exit_process(code: int) -> None:
    """Exit without finalizing the interpreter. Gloo's worker threads may still be releasing the tensors of
    finished collectives (a barrier keeps earlier work alive, ZeRO-3's all-gathers among it); one that needs the
    GIL once finalization has begun aborts the process ("terminate called without an active exception",
    SIGABRT) after all its work is done: 1 run in 7 with the CPU busy. Every file the run writes is closed by
    the time train() returns (callers must close theirs first); what is left to flush is flushed here."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def check_precision(cfg: EngineConfig) -> None:
    """Refuse a precision DeepSpeed cannot run here (the launcher calls this too, before any run dir exists)."""
    if cfg.precision == "fp16" and not fp16_supported():
        raise UserError("engine.precision=fp16: DeepSpeed has no fp16 on this machine's accelerator (on CPU it "
                        "needs oneDNN's fp16 kernels, AVX512-FP16 or AMX-FP16); use engine.precision=bf16 or "
                        "fp32, or a GPU")


def fp16_supported() -> bool:
    """Whether DeepSpeed's accelerator here runs fp16 (its engine refuses fp16 where this is false)."""
    from deepspeed.accelerator import get_accelerator

    return get_accelerator().is_fp16_supported()


def loss_terms(out: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An objective's loss as named terms: a scalar, or a dict whose "loss" entry is the one minimised."""
    return out if isinstance(out, dict) else {"loss": out}


def _grad_norm(module: torch.nn.Module) -> float:
    grads = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


def convert_to_universal(checkpoint_dir: Path) -> Path:
    """Write `checkpoint_dir/universal` from `checkpoint_dir/engine` (once; atomically). Run on one rank."""
    final = checkpoint_dir / UNIVERSAL_DIR
    if final.is_dir():
        return final
    import argparse
    import shutil

    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    tmp = checkpoint_dir / (UNIVERSAL_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ds_to_universal(argparse.Namespace(input_folder=str(checkpoint_dir / ENGINE_DIR), output_folder=str(tmp),
                                       num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False,
                                       strict=True, inject_missing_state=False))
    tmp.rename(final)
    return final
