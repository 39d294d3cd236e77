"""MFU and memory on one GPU, bf16: BERT-base (sequence 512) and T5-base (512 -> 114), through Graft's engine.

    PYTHONPATH=. python bench/gpu.py [--steps 20] [--bert-batch 32] [--t5-batch 32]

Each model trains on random tokens (MFU does not depend on the data) with Graft's Engine (ZeRO stage 0 on one
rank, bf16, AdamW, clipping 1.0); after 5 warm-up steps the median step time gives achieved FLOP/s by the
formulas in pretrain/flops.py (README, "Observability"): BERT's MLM head counts the 15% masked positions, T5
counts encoder, decoder self-attention, cross-attention and the LM head over the 114 target positions.
Both are Graft's own models (T5-base is v1.1: gated GELU, d_ff 2048, as configs/models/t5-base.yaml). The
peak is looked up from the GPU's name (H100 SXM: 989 TFLOP/s bf16); `--peak-tflops` overrides it. Needs a CUDA
GPU (`--smoke` runs tiny versions on CPU to check the script). Each model runs in a fresh process. Prints `mfu_bert_base` and `mfu_t5_base` last.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WARMUP = 5


def measure(model, batch_fn, loss_fn, flops_per_step: float, steps: int, batch: int, peak: float) -> dict:
    import torch

    from pretrain.distributed import init_distributed
    from pretrain.engine import Engine
    from pretrain.engine_config import EngineConfig
    from pretrain.optim import OptimConfig, build_optimizer

    init_distributed()
    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    engine = Engine(EngineConfig(zero_stage=0, precision="bf16", global_batch_size=batch, micro_batch_size=batch),
                    1, Path(tempfile.mkdtemp()), model, build_optimizer(model, OptimConfig()))
    times = []
    for i in range(WARMUP + steps):
        micro = [batch_fn()]
        sync()
        start = time.perf_counter()
        result = engine.step(micro, loss_fn, 1e-4)
        sync()
        if i >= WARMUP:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"mfu": flops_per_step / seconds / peak, "step_s": seconds, "tflops": flops_per_step / seconds / 1e12,
            "peak_memory_gb": engine.peak_memory_bytes() / 2**30, "loss": result.loss}


def bert_base(steps: int, batch: int, peak: float, smoke: bool) -> dict:
    import torch
    import torch.nn.functional as F

    from pretrain.flops import flops_per_sample
    from pretrain.models import build_model
    from pretrain.models.bert import BertConfig

    cfg, seq = BertConfig(), 512
    if smoke:
        cfg, seq = BertConfig(vocab_size=2000, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128), 64
    torch.manual_seed(0)
    model = build_model(cfg)

    def batch_fn():
        ids = torch.randint(1000, cfg.vocab_size, (batch, seq))
        labels = torch.where(torch.rand(batch, seq) < 0.15, ids, torch.full_like(ids, -100))
        return {"input_ids": ids, "labels": labels}

    def loss_fn(model, b):
        positions = b["labels"] != -100
        logits = model({"input_ids": b["input_ids"], "positions": positions}).logits
        return F.cross_entropy(logits.float(), b["labels"][positions])

    flops = batch * flops_per_sample(cfg, seq, 0.15 * seq)
    return measure(model, batch_fn, loss_fn, flops, steps, batch, peak)


def t5_base(steps: int, batch: int, peak: float, smoke: bool) -> dict:
    import torch

    from pretrain.flops import flops_per_sample
    from pretrain.models import build_model
    from pretrain.models.config import ModelConfig
    from pretrain.objectives.losses import seq2seq_loss

    # T5 v1.1 base as configs/models/t5-base.yaml (gated GELU, d_ff 2048, dropout 0.1)
    cfg = ModelConfig(family="t5", vocab_size=32128, hidden_size=768, num_layers=12, num_heads=12, head_dim=64,
                      intermediate_size=2048, hidden_act="gelu_new", layer_norm_eps=1e-6, pad_token_id=0,
                      eos_token_id=1, decoder_start_token_id=0, initializer_range=1.0)
    enc, dec = 512, 114
    if smoke:
        cfg = replace(cfg, vocab_size=2000, hidden_size=64, num_layers=2, num_heads=2, head_dim=32, intermediate_size=128)
        enc, dec = 64, 16
    torch.manual_seed(0)
    model = build_model(cfg)

    def batch_fn():  # span corruption's shapes: every decoder position labelled
        labels = torch.randint(2, cfg.vocab_size, (batch, dec))
        return {"input_ids": torch.randint(2, cfg.vocab_size, (batch, enc)),
                "decoder_input_ids": torch.cat([torch.zeros(batch, 1, dtype=torch.long), labels[:, :-1]], 1),
                "labels": labels}

    flops = batch * flops_per_sample(cfg, enc, dec, decoder_len=dec)
    return measure(model, batch_fn, seq2seq_loss, flops, steps, batch, peak)


MODELS = {"bert": bert_base, "t5": t5_base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--bert-batch", type=int, default=32)
    parser.add_argument("--t5-batch", type=int, default=32)
    parser.add_argument("--peak-tflops", type=float, default=0.0)
    parser.add_argument("--smoke", action="store_true", help="tiny models, CPU allowed: checks the script only")
    parser.add_argument("--worker", choices=MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    from pretrain.flops import peak_flops

    if not (torch.cuda.is_available() or args.smoke):
        raise SystemExit("bench/gpu.py needs a CUDA GPU")
    peak = peak_flops("bf16", args.peak_tflops or (1.0 if args.smoke and not torch.cuda.is_available() else 0.0))
    if peak is None:
        raise SystemExit(f"unknown peak for {torch.cuda.get_device_name()}; pass --peak-tflops")
    if args.worker:
        batch = args.bert_batch if args.worker == "bert" else args.t5_batch
        print(json.dumps(MODELS[args.worker](args.steps, batch, peak, args.smoke)))
        return
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"{device}: peak {peak / 1e12:.0f} TFLOP/s bf16", flush=True)
    results = {}
    for name in MODELS:  # a fresh process each: Accelerate's state is per process
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--worker", name], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"{name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name}: {results[name]}", flush=True)
    print(json.dumps({"mfu_bert_base": round(results["bert"]["mfu"], 4), "mfu_t5_base": round(results["t5"]["mfu"], 4),
                      "peak_memory_gb_bert_base": round(results["bert"]["peak_memory_gb"], 2),
                      "peak_memory_gb_t5_base": round(results["t5"]["peak_memory_gb"], 2)}))


if __name__ == "__main__":
    main()
