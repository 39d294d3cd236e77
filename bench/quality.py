"""Quality at an equal budget: Graft's held-out MLM loss vs HF `Trainer` with `DataCollatorForLanguageModeling`.

    PYTHONPATH=. python bench/quality.py [--steps 150] [--seeds 0 1] [--skip-matching] [--skip-recipe]

Same tiny BERT (hidden 128, 2 layers, sequence 64, dropout 0.1), same token sequences (Graft's packed segments
of the bundled corpus: documents 0-1099; the HF side gets them unmasked and masks them itself), same number of
steps and batch (32), same schedule (warmup 15 steps, linear decay to 0, peak lr 1e-3), AdamW (betas 0.9/0.98,
eps 1e-6, weight decay 0.01 without biases and norms), clipping 1.0, masking rate 0.15 with 80/10/10.
Graft trains through `graft train` on 2 processes (ZeRO-2); HF Trainer on one process. Both final models are
scored on the same fixed, pre-masked held-out batches (documents 1100-1313, Graft's tokenizer). Two seeds each
show the run-to-run noise. Prints `quality_loss_ratio` (mean Graft loss / mean HF Trainer loss) last.

`quality_recipe_loss_ratio`: Graft with its training recipe (`recipe=fast`, configs/recipes/fast.yaml) against
HF Trainer with `run_mlm.py`'s defaults (TrainingArguments' defaults: lr 5e-5, no warmup, linear decay, no
weight decay, betas 0.9/0.999, eps 1e-8, clipping 1.0; the model config's dropout 0.1; masking 0.15). The same
model and data; the budget is HF's samples x 64 tokens and its FLOPs (pretrain/flops.py at 15% masking):
Graft's recipe gets the most steps whose samples and FLOPs (its masking rate, batch ramp and curriculum
counted) stay within both. `quality_recipe_vs_matching_ratio` puts the same recipe against Graft with the
HF-matching recipe above (a tuned baseline, harder to beat than run_mlm.py's defaults).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import REPO_ROOT, mlm_batches, prepared_corpus  # noqa: E402

WORK = Path(tempfile.gettempdir()) / "graft-bench" / "quality"
SEQ, BATCH, WARMUP, LR = 64, 32, 15, 1e-3
TINY = REPO_ROOT / "configs" / "tiny.yaml"
# The recipe arm starts from the quickstart's config, which leaves optimisation to its recipe (tiny.yaml sets
# a learning rate, warmup and batch of its own, which would win over the recipe's).
RECIPE_BASE = REPO_ROOT / "configs" / "quickstart.yaml"
MODEL = dict(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512, max_position_embeddings=SEQ)


def held_out_batches(train_data: Path):
    data = prepared_corpus(WORK, 1100, None, tokenizer=train_data / "tokenizer.json")
    batches, _ = mlm_batches(data, SEQ, BATCH, 20, seed=12345)
    return batches


@__import__("torch").no_grad()
def score(logits_fn, batches) -> float:
    import torch.nn.functional as F

    total = count = 0
    for batch in batches:
        labels = batch["labels"]
        logits = logits_fn(batch)
        keep = labels != -100
        total += float(F.cross_entropy(logits[keep].float(), labels[keep], reduction="sum"))
        count += int(keep.sum())
    return total / count


def matching_overrides(steps: int) -> list[str]:
    """Graft with HF's recipe, as hf_run(..., "matching") trains it."""
    return ["model.hidden_dropout=0.1", "model.attention_dropout=0.1", f"optim.lr={LR}",
            f"optim.warmup_steps={WARMUP}", "optim.schedule=linear", f"engine.global_batch_size={BATCH}",
            f"engine.micro_batch_size={BATCH}", f"train.max_steps={steps}"]


def common_overrides(train_data: Path) -> list[str]:
    return [f"data.path={train_data}", "train.run_dir=unused", f"data.seq_len={SEQ}",
            *[f"model.{k}={v}" for k, v in MODEL.items()]]


def recipe_overrides(train_data: Path, hf_steps: int) -> tuple[list[str], dict]:
    """Graft's recipe at HF's budget: the most steps within HF's samples and FLOPs. Returns (overrides, budget)."""
    from bench.common import run_flops, run_samples
    from pretrain.config import load_config, load_recipe

    # 2 processes: each gets half of the recipe's global batch a step
    base = ["recipe=fast", f"engine.micro_batch_size={load_recipe('fast').engine.global_batch_size // 2}"]
    hf_cfg = load_config(TINY,
                         [*common_overrides(train_data), *matching_overrides(hf_steps)])
    samples, flops = run_samples(hf_cfg), run_flops(hf_cfg)  # HF masks 15%, as this config does
    steps = hf_steps * 4
    while True:
        cfg = load_config(RECIPE_BASE,
                          [*common_overrides(train_data), *base, f"train.max_steps={steps}"])
        if run_samples(cfg) <= samples and run_flops(cfg) <= flops:
            break
        steps -= 1
    budget = {"hf_samples": samples, "hf_gflops": round(flops / 1e9, 1), "recipe_steps": steps,
              "recipe_samples": run_samples(cfg), "recipe_gflops": round(run_flops(cfg) / 1e9, 1)}
    return [*base, f"train.max_steps={steps}"], budget


def graft_run(train_data: Path, seed: int, heldout, arm: list[str], name: str, config: Path = None) -> float:
    from pretrain.checkpoint import latest_checkpoint, read_model_weights
    from pretrain.models import build_model

    run = WORK / f"graft_{name}_seed{seed}"
    subprocess.run(["rm", "-rf", str(run)], check=True)
    overrides = [*common_overrides(train_data), f"train.run_dir={run}", f"seed={seed}", *arm,
                 "train.save_every=100000", "train.log_every=50"]
    subprocess.run([sys.executable, "-m", "launch.cli", "train", str(config or TINY), *overrides, "--nproc", "2"],
                   check=True, cwd=REPO_ROOT, capture_output=True)
    from pretrain.config import load_config

    model = build_model(load_config(run / "config.yaml").model)
    model.load_state_dict(read_model_weights(latest_checkpoint(run)))
    model.eval()
    return score(lambda b: model({"input_ids": b["input_ids"], "attention_mask": b.get("attention_mask")}).logits,
                 heldout)


def hf_run(train_data: Path, steps: int, seed: int, heldout, recipe: str = "matching") -> float:
    """HF Trainer with Graft's HF-matching recipe ("matching") or with run_mlm.py's defaults ("run_mlm")."""
    import torch
    from transformers import (BertConfig as HFBertConfig, BertForMaskedLM, DataCollatorForLanguageModeling,
                              PreTrainedTokenizerFast, Trainer, TrainingArguments)

    from data_pipeline.shards import Manifest
    from pretrain.hf.bert import parts
    from pretrain.models.config import ModelConfig

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(train_data / "tokenizer.json"), unk_token="[UNK]",
                                        pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    vocab = Manifest.load(train_data).vocab_size
    # The same architecture through Graft's own config map (the one `graft export` writes).
    cfg = parts(ModelConfig(vocab_size=vocab, hidden_dropout=0.1, attention_dropout=0.1, **MODEL))[0].config
    cfg = {k: v for k, v in cfg.items() if k != "model_type"}
    torch.manual_seed(seed)
    model = BertForMaskedLM(HFBertConfig(**cfg))
    # The very token sequences Graft trains on, unmasked: a label holds the original token where one was masked.
    batches, _ = mlm_batches(train_data, SEQ, BATCH, steps, seed=seed)
    rows = []
    for b in batches:
        original = torch.where(b["labels"] != -100, b["labels"], b["input_ids"])
        rows += [{"input_ids": original[i], **({"attention_mask": b["attention_mask"][i]} if "attention_mask" in b
                                               else {})} for i in range(len(original))]
    matching = dict(learning_rate=LR, warmup_steps=WARMUP, lr_scheduler_type="linear", weight_decay=0.01,
                    adam_beta1=0.9, adam_beta2=0.98, adam_epsilon=1e-6, max_grad_norm=1.0)
    args = TrainingArguments(output_dir=str(WORK / f"hf_{recipe}_seed{seed}"), per_device_train_batch_size=BATCH,
                             max_steps=steps, logging_strategy="no", save_strategy="no", report_to=[], use_cpu=True,
                             seed=seed, dataloader_num_workers=0, disable_tqdm=True,
                             **(matching if recipe == "matching" else {}))
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.15)
    Trainer(model=model, args=args, train_dataset=rows, data_collator=collator).train()
    model.eval()
    return score(lambda b: model(input_ids=b["input_ids"], attention_mask=b.get("attention_mask")).logits, heldout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--skip-matching", action="store_true", help="leave out quality_loss_ratio's two arms")
    parser.add_argument("--skip-recipe", action="store_true", help="leave out quality_recipe_loss_ratio's two arms")
    args = parser.parse_args()
    train_data = prepared_corpus(WORK, 0, 1100)
    heldout = held_out_batches(train_data)
    arms = {}
    if not args.skip_matching:
        arms["graft"] = lambda seed: graft_run(train_data, seed, heldout, matching_overrides(args.steps), "matching")
        arms["hf"] = lambda seed: hf_run(train_data, args.steps, seed, heldout)
    if not args.skip_recipe:
        recipe, budget = recipe_overrides(train_data, args.steps)
        print(f"budget: {json.dumps(budget)}", flush=True)
        arms["graft_recipe"] = lambda seed: graft_run(train_data, seed, heldout, recipe, "recipe", RECIPE_BASE)
        arms["hf_run_mlm"] = lambda seed: hf_run(train_data, args.steps, seed, heldout, "run_mlm")
    results = {name: [] for name in arms}
    for seed in args.seeds:
        for name, arm in arms.items():
            results[name].append(arm(seed))
        print(f"seed {seed}: held-out MLM loss at 15% masking: "
              + ", ".join(f"{k} {v[-1]:.4f}" for k, v in results.items()), flush=True)
    mean = {k: sum(v) / len(v) for k, v in results.items()}
    print("mean: " + ", ".join(f"{k} {v:.4f}" for k, v in mean.items()) + "; spread between seeds: "
          + ", ".join(f"{k} {max(v) - min(v):.4f}" for k, v in results.items()))
    figures = {}
    if "graft" in mean:
        figures["quality_loss_ratio"] = round(mean["graft"] / mean["hf"], 4)
    if "graft_recipe" in mean:
        figures["quality_recipe_loss_ratio"] = round(mean["graft_recipe"] / mean["hf_run_mlm"], 4)
        spread = max(max(v) - min(v) for k, v in results.items() if k in ("graft_recipe", "hf_run_mlm"))
        figures["quality_recipe_seed_spread_ratio"] = round(spread / mean["hf_run_mlm"], 4)
    if "graft" in mean and "graft_recipe" in mean:
        figures["quality_recipe_vs_matching_ratio"] = round(mean["graft_recipe"] / mean["graft"], 4)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
