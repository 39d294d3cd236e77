"""Quality at an equal budget: Graft's held-out MLM loss vs HF `Trainer` with `DataCollatorForLanguageModeling`.

    PYTHONPATH=. python bench/quality.py [--steps 150] [--seeds 0 1]

Same tiny BERT (hidden 128, 2 layers, sequence 64, dropout 0.1), same token sequences (Graft's packed segments
of the bundled corpus: documents 0-1099; the HF side gets them unmasked and masks them itself), same number of
steps and batch (32), same schedule (warmup 15 steps, linear decay to 0, peak lr 1e-3), AdamW (betas 0.9/0.98,
eps 1e-6, weight decay 0.01 without biases and norms), clipping 1.0, masking rate 0.15 with 80/10/10.
Graft trains through `graft train` on 2 processes (ZeRO-2); HF Trainer on one process. Both final models are
scored on the same fixed, pre-masked held-out batches (documents 1100-1313, Graft's tokenizer). Two seeds each
show the run-to-run noise. Prints `quality_loss_ratio` (mean Graft loss / mean HF Trainer loss) last.
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


def graft_run(train_data: Path, steps: int, seed: int, heldout) -> float:
    from pretrain.checkpoint import latest_checkpoint, read_model_weights
    from pretrain.models import build_model

    run = WORK / f"graft_seed{seed}"
    subprocess.run(["rm", "-rf", str(run)], check=True)
    overrides = [f"data.path={train_data}", f"train.run_dir={run}", f"seed={seed}", f"data.seq_len={SEQ}",
                 *[f"model.{k}={v}" for k, v in MODEL.items()], "model.hidden_dropout=0.1",
                 "model.attention_dropout=0.1", f"optim.lr={LR}", f"optim.warmup_steps={WARMUP}",
                 "optim.schedule=linear", f"engine.global_batch_size={BATCH}", f"engine.micro_batch_size={BATCH}",
                 f"train.max_steps={steps}", f"train.save_every={steps}", "train.log_every=50"]
    subprocess.run([sys.executable, "-m", "launch.cli", "train", "configs/tiny.yaml", *overrides, "--nproc", "2"],
                   check=True, cwd=REPO_ROOT, capture_output=True)
    from pretrain.config import load_config

    model = build_model(load_config(run / "config.yaml").model)
    model.load_state_dict(read_model_weights(latest_checkpoint(run)))
    model.eval()
    return score(lambda b: model({"input_ids": b["input_ids"], "attention_mask": b.get("attention_mask")}).logits,
                 heldout)


def hf_run(train_data: Path, steps: int, seed: int, heldout) -> float:
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
    args = TrainingArguments(output_dir=str(WORK / f"hf_seed{seed}"), per_device_train_batch_size=BATCH,
                             max_steps=steps, learning_rate=LR, warmup_steps=WARMUP, lr_scheduler_type="linear",
                             weight_decay=0.01, adam_beta1=0.9, adam_beta2=0.98, adam_epsilon=1e-6, max_grad_norm=1.0,
                             logging_strategy="no", save_strategy="no", report_to=[], use_cpu=True, seed=seed,
                             dataloader_num_workers=0, disable_tqdm=True)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.15)
    Trainer(model=model, args=args, train_dataset=rows, data_collator=collator).train()
    model.eval()
    return score(lambda b: model(input_ids=b["input_ids"], attention_mask=b.get("attention_mask")).logits, heldout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    train_data = prepared_corpus(WORK, 0, 1100)
    heldout = held_out_batches(train_data)
    results = {"graft": [], "hf": []}
    for seed in args.seeds:
        results["graft"].append(graft_run(train_data, args.steps, seed, heldout))
        results["hf"].append(hf_run(train_data, args.steps, seed, heldout))
        print(f"seed {seed}: held-out MLM loss Graft {results['graft'][-1]:.4f}, HF Trainer {results['hf'][-1]:.4f}",
              flush=True)
    mean = {k: sum(v) / len(v) for k, v in results.items()}
    print(f"mean: Graft {mean['graft']:.4f}, HF Trainer {mean['hf']:.4f}; "
          f"spread between seeds: Graft {max(results['graft']) - min(results['graft']):.4f}, "
          f"HF {max(results['hf']) - min(results['hf']):.4f}")
    print(json.dumps({"quality_loss_ratio": round(mean["graft"] / mean["hf"], 4)}))


if __name__ == "__main__":
    main()
