"""The training loop: step, log, evaluate, checkpoint. Runs on every rank, in-process or under torchrun."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from data_pipeline.collators.mlm import MLMConfig
from data_pipeline.errors import UserError
from data_pipeline.loader import Loader
from data_pipeline.shards import Manifest
from pretrain import checkpoint
from pretrain.config import RunConfig, load_config
from pretrain.construction import construct_model
from pretrain.curriculum import batch_size_at, seq_len_at, shorten
from pretrain.dataset_copy import dataset_source, keep_dataset_files
from pretrain.distributed import init_distributed
from pretrain.engine import Engine, loss_terms
from pretrain.failures import end_data_workers, strike_in_main, with_collate_fault
from pretrain.flops import batch_flops, peak_flops
from pretrain.metrics import MetricsLog, WindowMeter, console_line, write_summary
from pretrain.models.layers import set_layerdrop_step
from pretrain.objectives import build_objective, objective_heads, reads_logits_only
from pretrain.objectives.base import CollatorContext
from pretrain.recurrence import LaneMemory
from pretrain.optim import build_optimizer, learning_rate
from pretrain.output_bias import training_unigram
from pretrain.run_dir import CONFIG_FILE
from pretrain.signals import StopRequest
from pretrain.watchdog import HangWatchdog



@dataclass
class Outcome:
    state: checkpoint.TrainState
    stopped_by: str  # "end" (max_steps), "exit_at_step", or "signal SIGTERM" / "signal SIGUSR1"


def train(run_dir: Path, resume: bool = False) -> Outcome:
    """Train the run whose resolved config is `run_dir/config.yaml` (written by the launcher)."""
    stop_request = StopRequest()  # first: a preemption signal during start-up still ends in a checkpoint
    watchdog = HangWatchdog(run_dir)
    try:
        return _train(run_dir, resume, stop_request, watchdog)
    except BaseException:
        end_data_workers()  # else the interpreter's exit would wait for them forever (pretrain/failures.py)
        raise
    finally:
        watchdog.close()
        stop_request.close()


def _train(run_dir: Path, resume: bool, stop_request: StopRequest, watchdog: HangWatchdog) -> Outcome:
    rank, world = init_distributed()
    cfg = load_config(run_dir / CONFIG_FILE)
    manifest = keep_dataset_files(run_dir, cfg.data.path, rank == 0, cfg.data.remote)  # export needs no dataset
    recurrent = cfg.model.recurrence.mem_len > 0
    context = CollatorContext(manifest, cfg.data.seq_len, cfg.seed, dataset_source(run_dir, cfg.data.path),
                              recurrent=recurrent, type_vocab_size=cfg.model.type_vocab_size)
    collate, loss_fn = build_objective(cfg.objective, context)
    start = _resume_point(run_dir) if resume else None

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and at every world size
    # ZeRO-3: partitioned as it is built (and loaded), with the objective's pretraining-only heads
    model = construct_model(cfg.model, cfg.engine, world, objective_heads(cfg.objective),
                            _output_bias(cfg) if start is None else None)
    # A ZeRO 1-3 checkpoint holds one shard per saving rank: at another world size, read the universal form.
    saved_world = checkpoint.read_meta(start).get("world_size", world) if start is not None else world
    universal = cfg.engine.zero_stage > 0 and saved_world != world
    engine = Engine(cfg.engine, world, run_dir, model, build_optimizer(model, cfg.optim), load_universal=universal,
                    unused_params=cfg.model.layerdrop > 0)
    torch.manual_seed(cfg.seed * 100_003 + rank + 1)  # dropout noise differs between ranks
    train_collate = with_collate_fault(collate, cfg.train.debug_fault, rank, cfg.engine.global_batch_size)
    loader = Loader(cfg.data, collate.raw_length, train_collate, cfg.seed, rank, world, engine.micro_batch)
    _check_ramp(cfg, world, engine.micro_batch)

    memory = LaneMemory(rank, engine.micro_batch) if recurrent else None  # each lane's Transformer-XL memory
    state = checkpoint.TrainState()
    if rank == 0:
        checkpoint.remove_partial(run_dir)  # left by a process killed while writing one
    if start is not None:
        state, loader_state = checkpoint.load(engine, start, rank, memory)
        loader.load_state_dict(loader_state)
    eval_batches = _eval_batches(cfg, context, rank, world, engine.micro_batch) if cfg.train.eval_data else None

    stop = min(cfg.train.exit_at_step or cfg.train.max_steps, cfg.train.max_steps)
    metrics = MetricsLog(run_dir, enabled=rank == 0)
    meter = WindowMeter(peak_flops(cfg.engine.precision, cfg.train.peak_tflops))
    # disable=None: no bar when output is not a terminal (a SLURM log would get thousands of redraws); the
    # console line every train.log_every steps is there either way.
    bar = tqdm(total=stop, initial=state.step, desc="training", unit=" steps", disable=True if rank else None)
    saved_at = time.monotonic()
    watchdog.start(rank, cfg.train.hang_timeout_minutes)
    last, stopped_by = {}, "end" if stop == cfg.train.max_steps else "exit_at_step"
    batches = iter(loader)
    while state.step < stop:
        strike_in_main(cfg.train.debug_fault, rank, state.step + 1)
        wait_start = time.perf_counter()
        # The ramp and the curriculum are functions of the step: a resumed run continues them exactly.
        global_batch = batch_size_at(state.step, cfg.curriculum, cfg.engine.global_batch_size)
        length = seq_len_at(state.step, cfg.curriculum, cfg.data.seq_len)
        micro_batches = [shorten(next(batches), length) for _ in range(global_batch // (world * engine.micro_batch))]
        if memory is not None:
            micro_batches = memory.attach(micro_batches)
        data_wait = time.perf_counter() - wait_start
        lr = learning_rate(state.step, cfg.optim, cfg.train.max_steps)
        poison = rank == 0 and state.step + 1 in cfg.train.debug_nan_steps
        set_layerdrop_step(model, cfg.seed, state.step)  # derived from the checkpointed step: resumes exactly
        result = engine.step(micro_batches, _nan_loss(loss_fn) if poison else loss_fn, lr)
        state.step += 1
        state.tokens += global_batch * cfg.data.seq_len
        state.skipped += result.skipped
        state.nonfinite_streak = state.nonfinite_streak + 1 if result.nonfinite else 0
        meter.add(global_batch * cfg.data.seq_len, global_batch,
                  batch_flops(cfg.model, micro_batches, reads_logits_only(cfg.objective)), data_wait)
        bar.update(1)
        bar.set_postfix(loss=f"{result.loss:.3f}", refresh=False)

        scalars = {}
        if state.step % cfg.train.log_every == 0 or state.step == stop:
            scalars = {**_train_scalars(result, lr, state, meter, engine), "batch_size": global_batch,
                       "seq_len": length}
        if eval_batches and (state.step % cfg.train.eval_every == 0 or state.step == stop):
            scalars["eval_loss"] = engine.evaluate(eval_batches, loss_fn)
        if scalars:
            metrics.log(state.step, scalars)
            last.update(scalars)
            if rank == 0:
                bar.write(console_line(state.step, scalars))
        if state.nonfinite_streak >= cfg.train.max_nonfinite_in_a_row:
            _diverged(run_dir, state, cfg.train.max_nonfinite_in_a_row)

        # Every rank must agree to save (and stop) at the same step, or one would wait in a collective forever.
        timed = rank == 0 and 0 < cfg.train.save_every_minutes * 60 <= time.monotonic() - saved_at
        signalled, timed = engine.any_rank(stop_request.received is not None, timed)
        reason = f"signal {stop_request.received or 'on another rank'}" if signalled else "minutes" if timed else \
            stopped_by if state.step == stop else "periodic" if state.step % cfg.train.save_every == 0 else None
        if reason:
            checkpoint.save(engine, run_dir, state, loader.state_dict(), rank, cfg.train.keep_last, reason,
                            dataclasses.asdict(cfg.model), memory)
            saved_at = time.monotonic()
        watchdog.beat()  # after the step's evaluation and checkpoint too
        if signalled:
            stopped_by = reason
            break
    bar.close()
    metrics.close()
    del batches  # shuts the DataLoader workers down
    if rank == 0:
        write_summary(run_dir, _summary(cfg, state, stopped_by, last, meter, engine, run_dir))
    engine.close()
    return Outcome(state, stopped_by)


def _train_scalars(result, lr: float, state: checkpoint.TrainState, meter: WindowMeter, engine: Engine) -> dict:
    return {"loss": result.loss, **{f"loss/{k}": v for k, v in result.terms.items()}, "lr": lr,
            "grad_norm": result.grad_norm, "loss_scale": result.loss_scale, "skipped_steps": state.skipped,
            **meter.report(), "memory_gb": engine.peak_memory_bytes() / 2**30}


def _resume_point(run_dir: Path) -> Path:
    start = checkpoint.latest_checkpoint(run_dir)
    if start is None:
        raise UserError(f"--resume: {run_dir} holds no complete checkpoint to resume from; start without --resume")
    return start


def _output_bias(cfg: RunConfig) -> torch.Tensor | None:
    """The MLM output bias to start from (model.output_bias_init), None for zero, BERT's. Only a fresh run
    asks: a resumed one loads its weights."""
    return training_unigram(cfg.data, cfg.model.vocab_size) if cfg.model.output_bias_init == "unigram" else None


def _check_ramp(cfg: RunConfig, world: int, micro_batch: int) -> None:
    if cfg.curriculum.batch_start and cfg.curriculum.batch_start % (world * micro_batch):
        raise UserError(f"curriculum.batch_start ({cfg.curriculum.batch_start}) must be a multiple of ranks x "
                        f"micro-batch ({world} x {micro_batch}); lower engine.micro_batch_size to at most "
                        f"{max(1, cfg.curriculum.batch_start // world)}")


def _eval_batches(cfg: RunConfig, context: CollatorContext, rank: int, world: int, micro_batch: int) -> list[dict]:
    """This rank's share of the first `eval_batches` held-out micro-batch groups: the same at every evaluation.
    `context` is the training dataset's. MLM objectives are scored at BERT's 15% masking with 80/10/10,
    whatever rate training uses, so that runs with different rates compare."""
    if Manifest.load(cfg.train.eval_data, cfg.data.remote).tokenizer_sha256 != context.manifest.tokenizer_sha256:
        raise UserError(f"train.eval_data ({cfg.train.eval_data}) was tokenized with another tokenizer than "
                        f"data.path; prepare it with --tokenizer {cfg.data.path}/tokenizer.json")
    objective = dataclasses.replace(cfg.objective, mlm=MLMConfig())
    collate, _ = build_objective(objective, context)
    data = dataclasses.replace(cfg.data, path=cfg.train.eval_data, num_workers=0)
    loader = Loader(data, collate.raw_length, collate, cfg.seed, rank, world, micro_batch)
    batches = iter(loader)
    return [next(batches) for _ in range(cfg.train.eval_batches)]


def _nan_loss(loss_fn):
    """The objective's loss made NaN (train.debug_nan_steps): the real backward and step then see NaN."""
    def poisoned(model, batch):
        terms = loss_terms(loss_fn(model, batch))
        return {**terms, "loss": terms["loss"] * float("nan")}
    return poisoned


def _diverged(run_dir: Path, state: checkpoint.TrainState, limit: int):
    good = checkpoint.latest_checkpoint(run_dir)
    where = f"the last good checkpoint is {good}" if good else "no checkpoint was written yet"
    raise UserError(f"stopping at step {state.step}: the loss was not finite {limit} steps in a row (each was "
                    f"skipped; train.max_nonfinite_in_a_row={limit}). Skipped steps change no weights, so {where}; "
                    "lower optim.lr, raise optim.warmup_steps or use engine.precision=bf16, then continue with "
                    "--resume")


def _summary(cfg: RunConfig, state, stopped_by: str, last: dict, meter: WindowMeter, engine, run_dir: Path) -> dict:
    latest = checkpoint.latest_checkpoint(run_dir)
    return {"stopped_by": stopped_by, "step": state.step, "max_steps": cfg.train.max_steps, "tokens": state.tokens,
            "skipped_steps": state.skipped, "final_loss": last.get("loss"), "final_eval_loss": last.get("eval_loss"),
            **{f"session_{k}": v for k, v in meter.run_rates().items()},
            "peak_memory_gb_rank0": engine.peak_memory_bytes() / 2**30,
            "checkpoint": str(latest) if latest else None}
