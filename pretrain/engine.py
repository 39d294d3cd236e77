"""The training engine: Accelerate with its DeepSpeed plugin, the module that drives DeepSpeed's engine.

It wraps model and optimizer under the DeepSpeed JSON of `pretrain.engine_config`, runs one optimizer step
over a list of micro-batches (skipping it when the loss is not finite on any rank), and saves/loads the
engine's share of a checkpoint. (Joining and leaving the process group: `pretrain.distributed`; ZeRO-3
construction: `pretrain.construction`; the universal format: `pretrain.universal`.)
"""

from __future__ import annotations

import json
import math
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from data_pipeline.errors import UserError
from pretrain.distributed import bound_collectives
from pretrain.engine_config import EngineConfig, collective_timeout, deepspeed_config
from pretrain.run_dir import DEEPSPEED_FILE, ENGINE_DIR, UNIVERSAL_DIR


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
        self.num_params = num_params
        self.accumulation = self.ds_config["gradient_accumulation_steps"]
        self.micro_batch = self.ds_config["train_micro_batch_size_per_gpu"]
        # On CPU, Accelerate only treats the run as distributed when told the backend (gloo).
        handlers = [InitProcessGroupKwargs(backend="nccl" if torch.cuda.is_available() else "gloo",
                                           timeout=collective_timeout(cfg))]
        self.accelerator = Accelerator(deepspeed_plugin=DeepSpeedPlugin(hf_ds_config=self.ds_config),
                                       gradient_accumulation_steps=self.accumulation, kwargs_handlers=handlers)
        if self.accelerator.is_main_process:
            (run_dir / DEEPSPEED_FILE).write_text(json.dumps(self.ds_config, indent=1))
        # The config's per-group hyperparameters (weight decay 0 for biases and norms): re-applied after a load.
        self._group_hyper = [{k: v for k, v in g.items() if k not in ("params", "lr")} for g in optimizer.param_groups]
        self.model, _ = self.accelerator.prepare(model, optimizer)
        bound_collectives(collective_timeout(cfg))  # DeepSpeed's own groups have torch's 30 minutes till now
        self._optimizer = optimizer  # the innermost optimizer: DeepSpeed's wrappers call its step()
        self.device = self.accelerator.device
        self.world = world
        self._fp32_stage0 = cfg.zero_stage == 0 and cfg.precision == "fp32"
        self._unused_params = unused_params

    def step(self, micro_batches: list[dict], loss_fn: Callable[[torch.nn.Module, dict], Any],
             lr: float) -> StepResult:
        """One optimizer step at learning rate `lr` over the micro-batches given (`accumulation` of them, or as
        many as a batch-size ramp asks for this step).

        `loss_fn` returns a scalar loss or a dict of scalar terms whose "loss" entry is minimised. The caller
        derives `lr` from the step number, so the schedule has no state to checkpoint (and Accelerate's
        scheduler wrapper, which steps once per process, stays out of the way). DeepSpeed's own backward/step
        are called directly so that the ranks can agree, before the update, to skip a step whose loss is not
        finite: the update is then never applied, and weights and optimizer state stay as they were.
        """
        engine = self.model
        if len(micro_batches) != self.accumulation:  # a batch-size ramp: DeepSpeed divides each loss by this count
            engine.set_train_batch_size(len(micro_batches) * self.micro_batch * self.world)
            self.accumulation = len(micro_batches)
        for group in engine.optimizer.param_groups:
            group["lr"] = lr
        engine.train()
        sums: dict[str, torch.Tensor] = {}
        for i, batch in enumerate(micro_batches):
            batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
            # Said explicitly: DeepSpeed's own count of micro-steps loses step alignment when the ramp changes it.
            engine.set_gradient_accumulation_boundary(i == len(micro_batches) - 1)
            terms = loss_terms(loss_fn(engine, batch))
            engine.backward(terms["loss"])
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float()
            if i < len(micro_batches) - 1:
                engine.step()  # not a boundary: DeepSpeed only counts the micro-step
        names = sorted(sums)
        totals = self.all_reduce_sum(torch.stack([sums[n] for n in names]))  # NaN anywhere -> NaN everywhere
        means = {n: float(v) / (self.accumulation * self.world) for n, v in zip(names, totals, strict=True)}
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
        for group, hyper in zip(self._optimizer.param_groups, self._group_hyper, strict=True):
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


