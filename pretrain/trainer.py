"""The training loop: step, log, checkpoint. Runs on every rank, in-process or under torchrun."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm import tqdm

from data_pipeline.loader import Loader
from data_pipeline.shards import Manifest
from pretrain import checkpoint
from pretrain.config import load_config
from pretrain.engine import Engine, init_distributed
from pretrain.metrics import MetricsLog
from pretrain.models import build_model
from pretrain.objectives import build_objective
from pretrain.optim import build_optimizer, learning_rate

CONFIG_FILE = "config.yaml"


def train(run_dir: Path, resume: bool = False) -> checkpoint.TrainState:
    """Train the run whose resolved config is `run_dir/config.yaml` (written by the launcher)."""
    rank, world = init_distributed()
    cfg = load_config(run_dir / CONFIG_FILE)
    manifest = Manifest.load(cfg.data.path)
    collate, loss_fn = build_objective(cfg.objective, manifest, cfg.data.seq_len, cfg.seed)

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and at every world size
    model = build_model(cfg.model)
    engine = Engine(cfg.engine, world, run_dir, model, build_optimizer(model, cfg.optim))
    torch.manual_seed(cfg.seed * 100_003 + rank + 1)  # dropout noise differs between ranks
    loader = Loader(cfg.data, collate.raw_length, collate, cfg.seed, rank, world, cfg.engine.micro_batch_size)

    state = checkpoint.TrainState()
    if resume:
        state, loader_state = checkpoint.load(engine, checkpoint.latest_checkpoint(run_dir), rank)
        loader.load_state_dict(loader_state)

    stop = min(cfg.train.exit_at_step or cfg.train.max_steps, cfg.train.max_steps)
    metrics = MetricsLog(run_dir, enabled=rank == 0)
    bar = tqdm(total=stop, initial=state.step, desc="training", unit=" steps", disable=rank != 0)
    tokens_per_step = cfg.engine.global_batch_size * cfg.data.seq_len
    batches = iter(loader)
    window_start, data_wait = time.perf_counter(), 0.0
    while state.step < stop:
        wait_start = time.perf_counter()
        micro_batches = [next(batches) for _ in range(engine.accumulation)]
        data_wait += time.perf_counter() - wait_start
        lr = learning_rate(state.step, cfg.optim, cfg.train.max_steps)
        loss, grad_norm = engine.step(micro_batches, loss_fn, lr)
        state.step += 1
        state.tokens += tokens_per_step
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

        if state.step % cfg.train.log_every == 0 or state.step == stop:
            elapsed = time.perf_counter() - window_start
            steps = state.step % cfg.train.log_every or cfg.train.log_every
            scalars = {"loss": loss, "lr": lr, "grad_norm": grad_norm,
                       "tokens_per_s": steps * tokens_per_step / elapsed, "data_wait_frac": data_wait / elapsed}
            metrics.log(state.step, scalars)
            if rank == 0:
                bar.write(f"step {state.step:>6}  " + "  ".join(f"{k} {v:.4g}" for k, v in scalars.items()))
            window_start, data_wait = time.perf_counter(), 0.0
        if state.step % cfg.train.save_every == 0 or state.step == stop:
            checkpoint.save(engine, run_dir, state, loader.state_dict(), rank, cfg.train.keep_last)
    bar.close()
    metrics.close()
    del batches  # shuts the DataLoader workers down
    return state
