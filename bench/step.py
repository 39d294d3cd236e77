"""Step time: Graft's engine vs a plain PyTorch loop vs HF `Trainer`, same model, batches and optimizer.

    PYTHONPATH=. python bench/step.py [--steps 40]

The model is BERT (hidden 256, 2 layers, sequence 64, batch 16: sized for a 2-core CPU) with AdamW
(torch's fused kernel everywhere: Graft's default, and the Trainer's default `adamw_torch_fused`), gradient
clipping 1.0 and the same pre-collated MLM batches everywhere. Graft runs in-process on one rank with
its default ZeRO stage 2 in fp32 (as `configs/quickstart.yaml`); Graft and the Trainer each run in a fresh
process (Accelerate's state is per process).
The machine may be shared, so each contender alternates step by step with a plain loop on Graft's module in
the same process, and is measured as a ratio to it. Printed last:
- `step_overhead_vs_torch`: Graft / plain loop (the engine's overhead; Graft's module on both sides);
- `step_vs_hf_trainer`: Graft against HF Trainer training transformers' `BertForMaskedLM` with the same config
  and weights (what `run_mlm.py` trains): the whole step a user gets from either tool;
- `step_vs_hf_trainer_graft_module`: Graft against HF Trainer training Graft's own module and loss, so that
  only the training loops differ.
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
from pretrain.models.config import ModelConfig  # noqa: E402

WORK = Path(tempfile.gettempdir()) / "graft-bench" / "step"
SEQ, BATCH, WARMUP = 64, 16, 3
CFG = ModelConfig(family="bert", vocab_size=4000, hidden_size=256, num_layers=2, num_heads=4, intermediate_size=1024,
                  max_position_embeddings=SEQ)


def model_and_batches(steps: int):
    import torch

    from pretrain.models import build_model

    data = prepared_corpus(WORK, 0, 400)
    batches, loss_fn = mlm_batches(data, SEQ, BATCH, steps + WARMUP)
    torch.manual_seed(0)
    return build_model(CFG), batches, loss_fn


def plain_loop_step(steps: int):
    """(a step function of the plain PyTorch loop on its own copy of the model, its batches)."""
    import torch

    from pretrain.optim import OptimConfig, build_optimizer

    model, batches, loss_fn = model_and_batches(steps)
    optimizer = build_optimizer(model, OptimConfig())
    model.train()

    def step(batch):
        loss = loss_fn(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    return step, batches


def timed(step, batch) -> float:
    start = time.perf_counter()
    step(batch)
    return time.perf_counter() - start


def graft(steps: int) -> float:
    """Graft's step time over the plain loop's, the two alternating step by step in this process."""
    from pretrain.distributed import init_distributed
    from pretrain.engine import Engine
    from pretrain.engine_config import EngineConfig
    from pretrain.optim import OptimConfig, build_optimizer

    plain, plain_batches = plain_loop_step(steps)
    model, batches, loss_fn = model_and_batches(steps)
    init_distributed()
    engine = Engine(EngineConfig(zero_stage=2, global_batch_size=BATCH, micro_batch_size=BATCH), 1, WORK, model,
                    build_optimizer(model, OptimConfig()))
    ours, theirs = [], []
    for i, (batch, plain_batch) in enumerate(zip(batches, plain_batches)):
        ours.append(timed(lambda b: engine.step([b], loss_fn, 5e-4), batch))
        theirs.append(timed(plain, plain_batch))
    return median(ours[WARMUP:]) / median(theirs[WARMUP:])


def transformers_bert(model, cfg):
    """transformers' BertForMaskedLM with the config and weights of Graft's `model`: what run_mlm.py trains."""
    from transformers import BertConfig as HFBertConfig, BertForMaskedLM

    from pretrain.hf.convert import to_hf

    ((part, state),) = to_hf(model.state_dict(), cfg)
    hf = BertForMaskedLM(HFBertConfig(**part.config))
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= set(part.hf_tied), (missing, unexpected)
    return hf


def hf_trainer(steps: int, graft_module: bool) -> float:
    """HF Trainer's step time over the plain loop's; a plain step runs after each Trainer step (untimed there).

    The Trainer trains transformers' own BertForMaskedLM (same config and weights), or with `graft_module`
    Graft's module with Graft's loss (then only the training loops differ)."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    plain, plain_batches = plain_loop_step(steps)
    model, batches, loss_fn = model_and_batches(steps)

    class WithLoss(torch.nn.Module):  # Trainer wants the loss from forward(); the same loss function
        def __init__(self):
            super().__init__()
            self.bert = model

        def forward(self, **batch):
            return {"loss": loss_fn(self.bert, batch)}

    ours, theirs = [], []

    class Alternate(TrainerCallback):
        start = 0.0

        def on_step_begin(self, *a, **k):
            Alternate.start = time.perf_counter()

        def on_step_end(self, *a, **k):
            ours.append(time.perf_counter() - Alternate.start)
            theirs.append(timed(plain, plain_batches[len(theirs)]))

    samples = [{k: v[i] for k, v in b.items()} for b in batches for i in range(BATCH)]
    args = TrainingArguments(output_dir=str(WORK / "hf"), per_device_train_batch_size=BATCH, max_steps=len(batches),
                             learning_rate=5e-4, weight_decay=0.01, adam_beta2=0.98, adam_epsilon=1e-6,
                             max_grad_norm=1.0, lr_scheduler_type="constant", logging_strategy="no",
                             save_strategy="no", report_to=[], dataloader_num_workers=0, use_cpu=True,
                             disable_tqdm=True, remove_unused_columns=False, seed=0)
    collate = lambda rows: {k: torch.stack([r[k] for r in rows]) for k in rows[0]}  # noqa: E731
    trained = WithLoss() if graft_module else transformers_bert(model, CFG)
    Trainer(model=trained, args=args, train_dataset=samples, data_collator=collate, callbacks=[Alternate()]).train()
    # The Trainer's step spans forward, backward, clipping and the optimizer, but not fetching the batch.
    return median(ours[WARMUP:]) / median(theirs[WARMUP:])


METHODS = {"graft": graft, "hf": lambda steps: hf_trainer(steps, graft_module=False),
           "hf_graft_module": lambda steps: hf_trainer(steps, graft_module=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps({"ratio": METHODS[args.worker](args.steps)}))
        return
    prepared_corpus(WORK, 0, 400)
    ratio = {name: run_worker(Path(__file__), name, "--steps", str(args.steps))["ratio"] for name in METHODS}
    print(f"step time over the plain PyTorch loop's (median of {args.steps}, interleaved): Graft {ratio['graft']:.3f}, "
          f"HF Trainer on transformers' BertForMaskedLM {ratio['hf']:.3f}, "
          f"HF Trainer on Graft's module {ratio['hf_graft_module']:.3f}")
    print(json.dumps({"step_overhead_vs_torch": round(ratio["graft"], 4),
                      "step_vs_hf_trainer": round(ratio["graft"] / ratio["hf"], 4),
                      "step_vs_hf_trainer_graft_module": round(ratio["graft"] / ratio["hf_graft_module"], 4)}))


if __name__ == "__main__":
    main()
