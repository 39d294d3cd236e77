"""Shared by the benchmarks: a prepared sample corpus, fixed MLM batches, and timing helpers."""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CORPUS = REPO_ROOT / "data_pipeline" / "sample_corpus" / "python_docs.jsonl"


def prepared_corpus(work: Path, first: int = 0, last: int | None = None, tokenizer: Path | None = None,
                    vocab_size: int = 4000) -> Path:
    """Documents [first, last) of the bundled corpus, prepared under `work` (reused when already there)."""
    from data_pipeline.prepare import prepare

    out = work / f"data_{first}_{last}"
    if not (out / "manifest.json").is_file():
        work.mkdir(parents=True, exist_ok=True)
        corpus = work / f"corpus_{first}_{last}.jsonl"
        with open(SAMPLE_CORPUS) as src:
            corpus.write_text("".join(itertools.islice(src, first, last)))
        prepare([corpus], out, vocab_size=vocab_size, tokenizer=tokenizer)
    return out


def mlm_batches(data: Path, seq_len: int, batch: int, count: int, seed: int = 0, rank: int = 0, world: int = 1):
    """`count` MLM micro-batches from Graft's own loader and collator (static: the same for every method)."""
    from data_pipeline.loader import DataConfig, Loader
    from data_pipeline.shards import Manifest
    from pretrain.objectives import ObjectiveConfig, build_objective

    collate, loss_fn = build_objective(ObjectiveConfig(), Manifest.load(data), seq_len, seed)
    loader = Loader(DataConfig(path=str(data), seq_len=seq_len, num_workers=0), collate.raw_length, collate,
                    seed, rank, world, batch)
    return list(itertools.islice(iter(loader), count)), loss_fn


def run_worker(script: Path, *args: str) -> dict:
    """Run `script --worker ...` in a fresh process; its last stdout line is a JSON result."""
    out = subprocess.run([sys.executable, str(script), "--worker", *args], capture_output=True, text=True,
                         cwd=REPO_ROOT, env={**__import__("os").environ, "PYTHONPATH": str(REPO_ROOT)})
    if out.returncode != 0:
        raise SystemExit(f"{script.name} worker {args} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def median(xs: list[float]) -> float:
    return statistics.median(xs)
