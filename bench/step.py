"""Step time: Graft's engine vs a plain PyTorch loop vs HF `Trainer`, same model, batches and optimizer.

    PYTHONPATH=. python bench/step.py [--steps 40] [--rounds 2]

The model is Graft's BERT (hidden 256, 4 layers, sequence 128, batch 32) with AdamW, gradient clipping 1.0 and
the same pre-collated MLM batches everywhere. Each method runs in a fresh process (Accelerate's state is
per process), `--rounds` times in alternation, and the best median step time of each counts. Graft runs
in-process on one rank with its default ZeRO stage 2 in fp32 (the config of `configs/quickstart.yaml`).
Prints `step_overhead_vs_torch` (Graft / plain loop) and `step_vs_hf_trainer` (Graft / Trainer) last.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import median, mlm_batches, prepared_corpus, run_worker  # noqa: E402

WORK = Path(tempfile.gettempdir()) / "graft-bench" / "step"
SEQ, BATCH, WARMUP = 128, 32, 5


def model_and_batches(steps: int):
    import torch

    from pretrain.models import build_model
    from pretrain.models.bert import BertConfig

    data = prepared_corpus(WORK, 0, 400)
    batches, loss_fn = mlm_batches(data, SEQ, BATCH, steps + WARMUP)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=4000, hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024,
                     max_position_embeddings=SEQ)
    return build_model(cfg), batches, loss_fn


def time_steps(step, batches) -> float:
    times = []
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        step(batch)
        if i >= WARMUP:
            times.append(time.perf_counter() - start)
    return median(times)


def torch_loop(steps: int) -> float:
    import torch

    from pretrain.optim import OptimConfig, build_optimizer

    model, batches, loss_fn = model_and_batches(steps)
    optimizer = build_optimizer(model, OptimConfig())

    def step(batch):
        loss = loss_fn(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    model.train()
    return time_steps(step, batches)


def graft(steps: int) -> float:
    from pretrain.engine import Engine, EngineConfig, init_distributed
    from pretrain.optim import OptimConfig, build_optimizer

    model, batches, loss_fn = model_and_batches(steps)
    init_distributed()
    engine = Engine(EngineConfig(zero_stage=2, global_batch_size=BATCH, micro_batch_size=BATCH), 1, WORK, model,
                    build_optimizer(model, OptimConfig()))
    return time_steps(lambda batch: engine.step([batch], loss_fn, 5e-4).loss, batches)


def hf_trainer(steps: int) -> float:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model, batches, loss_fn = model_and_batches(steps)

    class WithLoss(torch.nn.Module):  # Trainer wants the loss from forward(); the same loss function
        def __init__(self):
            super().__init__()
            self.bert = model

        def forward(self, **batch):
            return {"loss": loss_fn(self.bert, batch)}

    class Timer(TrainerCallback):
        times, start = [], 0.0

        def on_step_begin(self, *a, **k):
            Timer.start = time.perf_counter()

        def on_step_end(self, *a, **k):
            Timer.times.append(time.perf_counter() - Timer.start)

    samples = [{k: v[i] for k, v in b.items()} for b in batches for i in range(BATCH)]
    args = TrainingArguments(output_dir=str(WORK / "hf"), per_device_train_batch_size=BATCH, max_steps=len(batches),
                             learning_rate=5e-4, weight_decay=0.01, adam_beta2=0.98, adam_epsilon=1e-6,
                             max_grad_norm=1.0, lr_scheduler_type="constant", logging_strategy="no",
                             save_strategy="no", report_to=[], dataloader_num_workers=0, use_cpu=True,
                             disable_tqdm=True, seed=0)
    collate = lambda rows: {k: torch.stack([r[k] for r in rows]) for k in rows[0]}  # noqa: E731
    Trainer(model=WithLoss(), args=args, train_dataset=samples, data_collator=collate,
            callbacks=[Timer()]).train()
    # The Trainer's step spans forward, backward, clipping and the optimizer, but not fetching the batch.
    return median(Timer.times[WARMUP:])


METHODS = {"torch": torch_loop, "graft": graft, "hf": hf_trainer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps({"seconds": METHODS[args.worker](args.steps)}))
        return
    prepared_corpus(WORK, 0, 400)
    best = {}
    for _ in range(args.rounds):
        for name in METHODS:
            seconds = run_worker(Path(__file__), name, "--steps", str(args.steps))["seconds"]
            best[name] = min(best.get(name, float("inf")), seconds)
            print(f"{name:>6}: {seconds * 1000:.1f} ms/step (median of {args.steps})", flush=True)
    print("best ms/step: " + ", ".join(f"{k} {v * 1000:.1f}" for k, v in best.items()))
    print(json.dumps({"step_overhead_vs_torch": round(best["graft"] / best["torch"], 4),
                      "step_vs_hf_trainer": round(best["graft"] / best["hf"], 4)}))


if __name__ == "__main__":
    main()
