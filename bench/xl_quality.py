"""Does Transformer-XL memory help an encoder on long documents? Held-out MLM loss, memory versus none.

    PYTHONPATH=. python bench/xl_quality.py [--steps 2000 --mem-len 64 --seq-len 16 --segments 48 --jobs 2]
                                            [--hidden 64 --heads 2]

Long documents: the sections of each page of the sample corpus joined in order (pages of a few thousand tokens).
The last `--heldout-pages` pages are held out. Two small encoders (`--hidden` wide, `--heads` heads, 2 layers, a
4,000-token vocabulary, one process, ZeRO 0, one CPU thread: cheap enough for a shared 2-core machine) with XL
relative positions train with recurrence lanes at equal segment length, steps and batch: one with a memory of
`--mem-len` positions, one without (mem_len 0). Each is evaluated by `graft eval`'s reader over the held-out
documents, segment by segment (the first segment has no memory either way), two seeds per side; the evaluation's
masking noise is the same for every run (seed 0), so the runs are compared on the same positions.

`--control` runs the same comparison on made-up documents in which memory is the only way to a low loss (each
repeats a random phrase longer than a segment; see `copy_documents`): a check that recurrence trains as it
should, printed as `xl_copy_control_loss_ratio`.

Prints, last, one JSON line: {"xl_long_doc_loss_ratio": mean loss with memory / without (goal: < 1),
"xl_seed_spread": the larger difference between one side's two seeds / the mean loss without memory}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch  # noqa: E402

from bench.common import REPO_ROOT, SAMPLE_CORPUS  # noqa: E402
from pretrain.long_eval import evaluate_long  # noqa: E402


def long_pages(work: Path, heldout: int) -> tuple[Path, Path]:
    """Two jsonl files of pages (sections joined in corpus order): training pages and held-out pages."""
    pages: dict[str, list[str]] = {}
    for line in SAMPLE_CORPUS.read_text().splitlines():
        record = json.loads(line)
        pages.setdefault(record["source"], []).append(record["text"])
    docs = [json.dumps({"text": "\n\n".join(texts)}) for texts in pages.values()]
    work.mkdir(parents=True, exist_ok=True)
    train, held = work / "pages_train.jsonl", work / "pages_heldout.jsonl"
    train.write_text("\n".join(docs[:-heldout]) + "\n")
    held.write_text("\n".join(docs[-heldout:]) + "\n")
    return train, held


def copy_documents(work: Path, phrase_words: int) -> tuple[Path, Path]:
    """The control (--control): documents that repeat one random phrase of `phrase_words` made-up words (longer
    than a segment) 20 times, 600 for training and 40 held out. Past its first occurrence every word of a document
    is in the phrase `phrase_words` tokens back, so a model can predict it from its memory and not from its
    segment: the memory must win by far if recurrence trains as it should."""
    rng = random.Random(0)
    words = sorted({"".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(5)) for _ in range(400)})
    work.mkdir(parents=True, exist_ok=True)
    paths = work / "copy_train.jsonl", work / "copy_heldout.jsonl"
    for path, count in zip(paths, (600, 40), strict=True):
        docs = [" ".join([rng.choice(words) for _ in range(phrase_words)] * 20) for _ in range(count)]
        path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return paths


# The batch: small enough that a run takes minutes on a shared CPU (the model's width is an option).
BATCH = ["model.num_layers=2", "engine.zero_stage=0", "engine.micro_batch_size=16", "engine.global_batch_size=16"]


def model_overrides(hidden: int, heads: int) -> list[str]:
    return [f"model.hidden_size={hidden}", f"model.num_heads={heads}", f"model.intermediate_size={4 * hidden}", *BATCH]


def graft_command(*args) -> list[str]:
    return [sys.executable, "-m", "launch.cli", *map(str, args)]


def run_all(commands: list[list[str]], jobs: int) -> None:
    """Run the commands, `jobs` at a time, one CPU thread each (on a shared machine more threads only contend)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    running: list[subprocess.Popen] = []
    for command in [*commands, None]:
        while running and (command is None or len(running) >= jobs):
            if running[0].wait() != 0:
                raise SystemExit(f"failed: {' '.join(running[0].args)}")
            running.pop(0)
        if command is not None:
            running.append(subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, env=env))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/graft-bench/xl_quality", help="scratch directory")
    parser.add_argument("--steps", type=int, default=2000, help="training steps per run (default %(default)s)")
    parser.add_argument("--mem-len", type=int, default=64, help="memory of the recurrent runs (default %(default)s)")
    parser.add_argument("--seq-len", type=int, default=16, help="segment length, data.seq_len (default %(default)s)")
    parser.add_argument("--heldout-pages", type=int, default=30, help="pages held out (default %(default)s)")
    parser.add_argument("--segments", type=int, default=48,
                        help="segments read per held-out page (default %(default)s)")
    parser.add_argument("--jobs", type=int, default=2, help="trainings run at once (default %(default)s)")
    parser.add_argument("--hidden", type=int, default=64, help="model width (default %(default)s)")
    parser.add_argument("--heads", type=int, default=2, help="attention heads (default %(default)s)")
    parser.add_argument("--control", action="store_true",
                        help="train and score on made-up documents that repeat a phrase longer than a segment "
                             "(memory must win there; prints xl_copy_control_loss_ratio)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work) / ("control" if args.control else "")
    # The control's 2,000-token vocabulary holds each made-up word whole: one word, one token.
    train, held = copy_documents(work, args.seq_len + 8) if args.control else long_pages(work, args.heldout_pages)
    data, heldout = work / "data", work / "heldout"
    if not (data / "manifest.json").is_file():
        run_all([graft_command("prepare", train, "--out", data, "--vocab-size", 2000 if args.control else 4000)], 1)
    if not (heldout / "manifest.json").is_file():
        run_all([graft_command("prepare", held, "--out", heldout, "--tokenizer", data / "tokenizer.json")], 1)
    runs = {(side, seed): (work / f"{side}_seed{seed}_{args.steps}_{args.seq_len}_{mem_len}_{args.hidden}x{args.heads}",
                           mem_len)
            for side, mem_len in (("memory", args.mem_len), ("none", 0)) for seed in (0, 1)}
    run_all([graft_command("train", REPO_ROOT / "configs" / "quickstart.yaml", f"data.path={data}",
                           f"train.run_dir={run}", f"seed={seed}", "model.positions=xl",
                           f"model.recurrence.mem_len={mem_len}", "data.lanes=true", f"data.seq_len={args.seq_len}",
                           *model_overrides(args.hidden, args.heads), f"train.max_steps={args.steps}",
                           f"train.save_every={args.steps}",
                           "train.log_every=100")
             for (side, seed), (run, mem_len) in runs.items() if not (run / "summary.json").is_file()], args.jobs)
    losses: dict[str, list[float]] = {"memory": [], "none": []}
    for (side, seed), (run, _) in runs.items():
        report = evaluate_long(run, heldout, mem_len=args.mem_len, segments=args.segments, mask_seed=0)
        curve = report["with_memory"] if side == "memory" else report["without_memory"]
        losses[side].append(sum(curve) / len(curve))
        print(f"{side} seed {seed}: held-out loss per segment {' '.join(f'{v:.3f}' for v in curve)}")
    mean = {side: sum(v) / len(v) for side, v in losses.items()}
    spread = max(abs(v[0] - v[1]) for v in losses.values()) / mean["none"]
    ratio = "xl_copy_control_loss_ratio" if args.control else "xl_long_doc_loss_ratio"
    print(json.dumps({ratio: round(mean["memory"] / mean["none"], 4), "xl_seed_spread": round(spread, 4)}))


if __name__ == "__main__":
    main()
