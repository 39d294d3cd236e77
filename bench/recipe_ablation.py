"""The ablations behind configs/recipes/: the quickstart's model trained with one choice changed at a time.

    PYTHONPATH=. python bench/recipe_ablation.py VARIANT [VARIANT ...] [--steps 400] [--vocab 8192] [--list]

Every variant trains the quickstart's BERT (hidden 128, sequence 64; 4 layers in rounds 1-2 as the quickstart
had then, 2 in rounds 3-4) through `graft train` on 2 processes, on documents 0-1099 of the bundled corpus (a
WordPiece vocabulary of --vocab tokens: 8,192 in rounds 1-2, 4,096 in rounds 3-4), for the same number of
samples (steps x 64 in rounds 1-2, steps x 32 in rounds 3-4, unless the variant says otherwise), and is scored
on documents 1100-1313 at 15% masking with 80/10/10 whatever rate it trained with (the trainer's held-out
evaluation). Each variant prints one JSON line: its held-out loss, the tokens and Graft's FLOP count
(pretrain/flops.py) it used, and the overrides that define it, so that docs/recipe.md can say which choice
bought how much at what budget. Rounds 5-7 give every variant the quickstart's 64,000 samples (`--steps 4000` at
batch 16).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import REPO_ROOT, prepared_corpus, run_flops  # noqa: E402

WORK = Path(tempfile.gettempdir()) / "graft-bench" / "recipe"
QUICKSTART = REPO_ROOT / "configs" / "quickstart.yaml"
# The quickstart's optimisation and depth before the recipe (what issue 19 started from); each variant changes that.
BEFORE = ["recipe=null", "optim.lr=1e-3", "optim.warmup_steps=30", "optim.schedule=linear", "model.hidden_dropout=0",
          "model.attention_dropout=0", "engine.global_batch_size=64", "engine.micro_batch_size=32",
          "model.num_layers=4"]
B32 = ["engine.global_batch_size=32", "train.max_steps=800"]
R3 = [*B32[:1], "model.num_layers=2"]  # the steps come from --steps
R4 = [*R3, "engine.global_batch_size=16", "engine.micro_batch_size=8", "model.initializer_range=0.05"]
R5 = [*R4, "model.output_bias_init=unigram"]
R6 = [*R5, "objective.mlm.mask_prob=0.4", "optim.schedule=wsd", "optim.decay_fraction=0.2"]
R7 = [*R6, "optim.decay_fraction=0.1", "optim.lr=1.4e-3", "optim.warmup_steps=100"]
VARIANTS: dict[str, list[str]] = {
    "before": [],
    "lr2e-3": ["optim.lr=2e-3"],
    "lr4e-3": ["optim.lr=4e-3"],
    "mask30": ["objective.mlm.mask_prob=0.3"],
    "mask40": ["objective.mlm.mask_prob=0.4"],
    "batch32": ["engine.global_batch_size=32", "train.max_steps=800"],  # the same samples in twice the steps
    "warmup100": ["optim.warmup_steps=100"],
    "cosine": ["optim.schedule=cosine"],
    "wd0.1": ["optim.weight_decay=0.1"],
    "init0.01": ["model.initializer_range=0.01"],
    "init0.04": ["model.initializer_range=0.04"],
    "noclip": ["engine.grad_clip=0"],
    "beta2_0.999": ["optim.betas=[0.9,0.999]"],
    "dropout0.1": ["model.hidden_dropout=0.1", "model.attention_dropout=0.1"],
    # batch 16, 32, 48, 64 for 50 steps each, then 64: 475 steps hold the same 25,600 samples as 400 x 64
    "ramp": ["curriculum.batch_start=16", "curriculum.batch_ramp_steps=200", "engine.micro_batch_size=8",
             "train.max_steps=475"],
    "seq32": ["curriculum.seq_len_start=32", "curriculum.seq_len_steps=200"],  # rows of 32 tokens, then 64
    # Round 2, on top of the best of round 1 (batch 32: the same samples in 800 steps).
    "b16": ["engine.global_batch_size=16", "engine.micro_batch_size=8", "train.max_steps=1600"],
    "b32_lr2e-3": [*B32, "optim.lr=2e-3"],
    "b32_lr5e-4": [*B32, "optim.lr=5e-4"],
    "b32_mask30": [*B32, "objective.mlm.mask_prob=0.3"],
    "b32_warmup80": [*B32, "optim.warmup_steps=80"],
    "b32_wd0.1": [*B32, "optim.weight_decay=0.1"],
    "b32_init0.01": [*B32, "model.initializer_range=0.01"],
    "b32_dropout0.1": [*B32, "model.hidden_dropout=0.1", "model.attention_dropout=0.1"],
    # batch 16 for 100 steps, then 32: 850 steps hold the same 25,600 samples
    "b32_ramp": [*B32, "curriculum.batch_start=16", "curriculum.batch_ramp_steps=200", "engine.micro_batch_size=8",
                 "train.max_steps=850"],
    "b32_seq32": [*B32, "curriculum.seq_len_start=32", "curriculum.seq_len_steps=400"],
    # 30% masking costs 16.6% more FLOPs (the MLM head runs on twice the positions): 686 steps hold 800's FLOPs
    "b32_mask30_eqflops": [*B32, "objective.mlm.mask_prob=0.3", "train.max_steps=686"],
    "recipe": ["recipe=fast"],
    # Round 3 (run with --vocab 4096): the recipe as of round 2 on a 2-layer model, then one choice at a time.
    "r3": R3,
    "r3_init0.05": [*R3, "model.initializer_range=0.05"],
    "r3_mask40": [*R3, "objective.mlm.mask_prob=0.4"],
    "r3_warmup150_lr2e-3": [*R3, "optim.warmup_steps=150", "optim.lr=2e-3"],
    "r3_b16": [*R3, "engine.global_batch_size=16", "engine.micro_batch_size=8", "train.max_steps=1200"],  # --steps 600
    # Round 4 (--vocab 4096 --steps 1200): the best of round 3 together (batch 16, init 0.05), then one more.
    "r4": R4,
    "r4_lr2e-3_warmup150": [*R4, "optim.lr=2e-3", "optim.warmup_steps=150"],
    "r4_init0.1": [*R4, "model.initializer_range=0.1"],
    "r4_mask40": [*R4, "objective.mlm.mask_prob=0.4"],  # equal tokens; more FLOPs (the MLM head on more positions)
    # Round 5 (--vocab 4096 --steps 4000: the quickstart's 64,000 samples): the output bias, then 40% on top.
    "r5_unigram": R5,
    "r5_unigram_mask40": [*R5, "objective.mlm.mask_prob=0.4"],
    "r5_unigram_mask40_lr2e-3_warmup150": [*R5, "objective.mlm.mask_prob=0.4", "optim.lr=2e-3",
                                           "optim.warmup_steps=150"],
    # batch 8 in twice the steps: the same samples (run with --steps 8000)
    "r5_unigram_mask40_b8": [*R5, "objective.mlm.mask_prob=0.4", "engine.global_batch_size=8",
                             "engine.micro_batch_size=4"],
    # Round 6 (--vocab 4096 --steps 4000): the decay shape on r5_unigram_mask40 (the recipe of round 5).
    "r6_wsd": R6,
    # Round 7 (--vocab 4096 --steps 4000): wsd's decay fraction and the peak it holds, on r6_wsd.
    "r7_decay0.4": [*R6, "optim.decay_fraction=0.4"],
    "r7_decay0.1": [*R6, "optim.decay_fraction=0.1"],
    "r7_decay0.05": [*R6, "optim.decay_fraction=0.05"],
    "r7_lr2e-3_warmup150": [*R6, "optim.lr=2e-3", "optim.warmup_steps=150"],
    "r7_decay0.1_warmup100": [*R6, "optim.decay_fraction=0.1", "optim.warmup_steps=100"],
    "r7_decay0.1_lr7e-4": [*R6, "optim.decay_fraction=0.1", "optim.lr=7e-4"],
    "r7_decay0.1_lr1.4e-3_warmup100": R7,
    "r7_decay0.1_lr1.7e-3_warmup100": [*R7, "optim.lr=1.7e-3"],
    "r7_decay0.05_lr1.4e-3_warmup100": [*R7, "optim.decay_fraction=0.05"],
    "r7_mask50": [*R7, "objective.mlm.mask_prob=0.5"],
    "r7_noclip": [*R7, "engine.grad_clip=0"],
    "r7_beta2_0.95": [*R7, "optim.betas=[0.9,0.95]"],
    "r7_wd0.1": [*R7, "optim.weight_decay=0.1"],
    "r7_wd0": [*R7, "optim.weight_decay=0"],
    "r7_lr1.2e-3": [*R7, "optim.lr=1.2e-3"],
    "r7_lr1.7e-3_warmup200": [*R7, "optim.lr=1.7e-3", "optim.warmup_steps=200"],
    "r7_lr1.7e-3_warmup200_seed1": [*R7, "optim.lr=1.7e-3", "optim.warmup_steps=200", "seed=1"],
    "r7_eps1e-8": [*R7, "optim.eps=1e-8"],
    # The model's shape under R7 (a quickstart choice, not the recipe's): per step, then at about equal time.
    "r7_layers3": [*R7, "model.num_layers=3"],
    "r7_hidden192": [*R7, "model.hidden_size=192", "model.intermediate_size=768"],
    "r7_hidden192_steps2450": [*R7, "model.hidden_size=192", "model.intermediate_size=768", "train.max_steps=2450"],
    "r7_hidden160_steps3100": [*R7, "model.hidden_size=160", "model.intermediate_size=640", "train.max_steps=3100"],
    "r6_wsd_seed1": [*R6, "seed=1"],
    "r7_decay0.1_lr1.4e-3_warmup100_seed1": [*R7, "seed=1"],
}


def run_variant(name: str, extra: list[str], steps: int, train_data: Path, heldout: Path) -> dict:
    from pretrain.config import load_config
    from pretrain.metrics import read_metrics

    run = WORK / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    shutil.rmtree(run, ignore_errors=True)
    overrides = [f"data.path={train_data}", f"train.run_dir={run}", f"train.eval_data={heldout}",
                 f"train.max_steps={steps}", f"train.save_every={steps}", f"train.eval_every={steps // 4}",
                 "train.eval_batches=16", "train.log_every=50", *BEFORE, *extra]
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "launch.cli", "train", str(QUICKSTART), *overrides, "--nproc", "2"],
                   check=True, cwd=REPO_ROOT, capture_output=True)
    seconds = time.monotonic() - start
    cfg = load_config(run / "config.yaml")
    metrics = read_metrics(run)
    evals = {s: round(r["eval_loss"], 4) for s, r in sorted(metrics.items()) if "eval_loss" in r}
    summary = json.loads((run / "summary.json").read_text())
    return {"variant": name, "eval_loss": evals[max(evals)], "eval_curve": evals,
            "train_loss": round(summary["final_loss"], 4), "tokens": summary["tokens"],
            "gflops": round(run_flops(cfg) / 1e9, 1), "seconds": round(seconds, 1), "overrides": extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="*", help="names from --list, or KEY=VALUE,KEY=VALUE for an ad-hoc one")
    parser.add_argument("--steps", type=int, default=400, help="optimizer steps of each run (default: %(default)s)")
    parser.add_argument("--vocab", type=int, default=8192, help="WordPiece vocabulary (default: %(default)s)")
    parser.add_argument("--list", action="store_true", help="print the variants and their overrides")
    args = parser.parse_args()
    if args.list or not args.variants:
        for name, extra in VARIANTS.items():
            print(f"{name}: {' '.join(extra) or '(the quickstart before the recipe)'}")
        return
    work = WORK if args.vocab == 8192 else WORK / f"vocab{args.vocab}"
    train_data = prepared_corpus(work, 0, 1100, vocab_size=args.vocab)
    heldout = prepared_corpus(work, 1100, None, tokenizer=train_data / "tokenizer.json")
    results = []
    for name in args.variants:
        extra = VARIANTS[name] if name in VARIANTS else name.split(",")
        results.append(run_variant(name, extra, args.steps, train_data, heldout))
        print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"recipe_ablation_eval_loss": {r["variant"]: r["eval_loss"] for r in results}}))


if __name__ == "__main__":
    main()
