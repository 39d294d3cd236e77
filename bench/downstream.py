"""Downstream benchmark: does pretraining with Graft help a downstream task?

    python bench/downstream.py [--quickstart DIR] [--steps 300] [--lr 1e-3] [--seeds 0 1] [--jobs 4]

The model `graft quickstart` exports (its BERT: 2 layers, hidden 128, pretrained with `recipe: fast` on the
sample corpus) and the same architecture from random initialisation are each fine-tuned with plain
`transformers` on the same section-classification split of the sample corpus (which part of the Python docs a
section comes from; whole pages held out: data_pipeline/sample_corpus/sections.py), with the same steps,
learning rate and batches, once per seed. Both use the quickstart's tokenizer. The quickstart runs first
unless --quickstart names a finished one. With --jobs N the fine-tunings run N at a time, each in its own
process on one thread (the figures do not depend on the order; a one-thread run may differ from a
multi-threaded one in the last bits).

Figures, last line, one JSON object: `downstream_acc_pretrained` and `downstream_acc_scratch` (mean held-out
accuracy over the seeds), `downstream_gain` (their difference) and `downstream_seed_spread` (the larger of the
two sides' max - min over seeds). Goal: the gain is above the seed spread.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from data_pipeline.sample_corpus.sections import (  # noqa: E402
    PARTS, fine_tune_accuracy, majority_baseline, section_classification)


def score(hf_dir: Path, pretrained: bool, seed: int, steps: int, lr: float) -> float:
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
    torch.manual_seed(seed)  # the classifier head (and, from scratch, every weight) starts from the seed
    if pretrained:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(hf_dir, num_labels=len(PARTS))
    else:
        config = transformers.AutoConfig.from_pretrained(hf_dir, num_labels=len(PARTS))
        model = transformers.AutoModelForSequenceClassification.from_config(config)
    train, test = section_classification()
    return fine_tune_accuracy(model, tokenizer, train, test, steps=steps, lr=lr, seed=seed,
                              max_length=config_positions(hf_dir))


def score_alone(hf_dir: Path, pretrained: bool, seed: int, steps: int, lr: float) -> float:
    """`score` in a worker process of its own, on one intra-op thread."""
    import torch

    torch.set_num_threads(1)
    return score(hf_dir, pretrained, seed, steps, lr)


def config_positions(hf_dir: Path) -> int:
    return json.loads((hf_dir / "config.json").read_text())["max_position_embeddings"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quickstart", help="a finished `graft quickstart --out DIR` to reuse (default: run one)")
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning steps of 32 sections (default: 300)")
    parser.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate (default: 1e-3)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds, each run on both sides")
    parser.add_argument("--jobs", type=int, default=1, help="fine-tunings run at once, one process each (default: 1)")
    args = parser.parse_args()

    out = Path(args.quickstart) if args.quickstart else Path(tempfile.mkdtemp(prefix="graft-bench-downstream-")) / "qs"
    if not (out / "hf" / "config.json").is_file():
        subprocess.run([sys.executable, "-m", "launch.cli", "quickstart", "--out", str(out)], cwd=REPO, check=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    hf_dir = out / "hf"
    train, test = section_classification()
    print(f"split: {len(train)} train / {len(test)} held-out sections, {len(PARTS)} classes; majority class "
          f"{majority_baseline(train, test):.3f}", file=sys.stderr)
    runs = [(side, seed) for side in ("pretrained", "scratch") for seed in args.seeds]
    if args.jobs > 1:
        with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(score_alone, hf_dir, side == "pretrained", seed, args.steps, args.lr)
                       for side, seed in runs]
            results = [f.result() for f in futures]
    else:
        results = [score(hf_dir, side == "pretrained", seed, args.steps, args.lr) for side, seed in runs]
    accuracy = {side: [a for (s, _), a in zip(runs, results, strict=True) if s == side]
                for side in ("pretrained", "scratch")}
    for side, values in accuracy.items():
        print(f"{side}: {[round(a, 3) for a in values]} (seeds {args.seeds})", file=sys.stderr)
    pretrained, scratch = (statistics.mean(accuracy[s]) for s in ("pretrained", "scratch"))
    spread = max(max(a) - min(a) for a in accuracy.values())
    print(json.dumps({"downstream_acc_pretrained": round(pretrained, 4), "downstream_acc_scratch": round(scratch, 4),
                      "downstream_gain": round(pretrained - scratch, 4), "downstream_seed_spread": round(spread, 4),
                      "steps": args.steps, "lr": args.lr, "seeds": args.seeds}))


if __name__ == "__main__":
    main()
