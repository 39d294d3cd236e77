"""Loader throughput: MLM batches of 512 tokens per second, Graft versus the usual alternatives.

All sides read the same corpus (the bundled sample corpus, repeated) with the same tokenizer, through a
torch `DataLoader` with the same number of workers and batch size:

  graft              Graft's Loader over its shards (memory map), Graft's MLM collator
  hf_streaming       HF `datasets` streaming + on-the-fly tokenization + DataCollatorForLanguageModeling
  hf_pretokenized    run_mlm.py's path: tokenized, grouped `datasets` dataset + DataCollatorForLanguageModeling
  mds                mosaicml-streaming's StreamingDataset over MDS shards of the same segments, Graft's
                     MLM collator (run in its own venv: it pins older numpy / transformers)
  memmap             the ceiling: raw segments straight from the memory-mapped shards, no masking

and time-to-first-batch of a Graft loader resumed at sample 10^8 versus one starting at 0.
Run: python bench/loader.py   (first run creates bench/.venv-mds; see --mds-venv)
The last line printed is one JSON object with the ratios (Graft's samples/s over each baseline's).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from data_pipeline.collators.mlm import MLMCollator, MLMConfig  # noqa: E402
from data_pipeline.handoff import RingReceiver, WorkerRing  # noqa: E402
from data_pipeline.loader import DataConfig, Loader  # noqa: E402
from data_pipeline.prepare import prepare  # noqa: E402
from data_pipeline.sample_corpus import SAMPLE_CORPUS  # noqa: E402
from data_pipeline.shards import TOKENIZER_FILE, Manifest  # noqa: E402

# One pip call: torch 2.13 is the CPU build on this machine's disk; torchvision 0.28 is the release made for it
# (mosaicml-streaming needs torchvision, whose newest release would pull a CUDA torch 2.14).
MDS_REQUIREMENTS = ["torch==2.13.0", "torchvision<0.29", "mosaicml-streaming==0.13.*"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def make_corpus(work: Path, copies: int) -> list[Path]:
    """The sample corpus `copies` times, in two files (so HF streaming can give each worker a shard)."""
    lines = SAMPLE_CORPUS.read_text().splitlines(keepends=True) * copies
    half = len(lines) // 2
    paths = [work / "corpus" / f"part{i}.jsonl" for i in range(2)]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for path, chunk in zip(paths, (lines[:half], lines[half:]), strict=True):
        if not path.exists():
            path.write_text("".join(chunk))
    return paths


def timed(batches, n: int, warmup: int, batch_size: int, min_seconds: float) -> float:
    """Samples per second over at least `n` batches and `min_seconds`, after `warmup` batches (worker start-up,
    first reads) are discarded. The time floor keeps fast sides from being timed over a few milliseconds,
    where noise and the batches already prefetched during warm-up would dominate."""
    it = iter(batches)
    for _ in range(warmup):
        next(it)
    start, done = time.perf_counter(), 0
    while done < n or time.perf_counter() - start < min_seconds:
        next(it)
        done += 1
    return done * batch_size / (time.perf_counter() - start)


def forever(make_loader):
    while True:  # a fresh epoch when a finite loader ends
        yield from make_loader()


# ---- the sides ----------------------------------------------------------------------------------------------

def raw_tokens(batch):
    return {"input_ids": torch.from_numpy(batch.tokens)}


def graft_loader(data: Path, args, consumed: int = 0, collate=None) -> Loader:
    manifest = Manifest.load(data)
    mlm = MLMCollator(MLMConfig(), manifest.special_tokens, manifest.vocab_size, args.seq_len, seed=0)
    loader = Loader(DataConfig(path=str(data), seq_len=args.seq_len, num_workers=args.workers), mlm.raw_length,
                    collate or mlm, seed=0, rank=0, world=1, micro_batch=args.batch_size)
    if consumed:
        loader.load_state_dict({"consumed_samples": consumed, "seed": 0})
    return loader


def hf_tokenizer(data: Path):
    from transformers import BertTokenizerFast
    from tokenizers import Tokenizer

    return BertTokenizerFast(tokenizer_object=Tokenizer.from_file(str(data / TOKENIZER_FILE)), unk_token="[UNK]",
                             sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]")


def run_mlm_maps(tok, seq_len):
    """run_mlm.py's tokenize_function and group_texts (its default: concatenate, cut every seq_len)."""
    def tokenize(examples):
        return tok(examples["text"], return_special_tokens_mask=True)

    def group(examples):
        concatenated = {k: list(itertools.chain(*examples[k])) for k in examples}
        total = len(concatenated["input_ids"]) // seq_len * seq_len
        return {k: [t[i:i + seq_len] for i in range(0, total, seq_len)] for k, t in concatenated.items()}
    return tokenize, group


def hf_streaming_batches(corpus, data, args):
    import datasets
    from transformers import DataCollatorForLanguageModeling

    tok = hf_tokenizer(data)
    tokenize, group = run_mlm_maps(tok, args.seq_len)
    collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.15)

    def make():
        ds = datasets.load_dataset("json", data_files=[str(p) for p in corpus], split="train", streaming=True)
        columns = list(json.loads(corpus[0].open().readline()))
        ds = ds.map(tokenize, batched=True, remove_columns=columns)
        ds = ds.map(group, batched=True)
        return DataLoader(ds, batch_size=args.batch_size, collate_fn=collator, num_workers=args.workers)
    return lambda: forever(make)


def hf_pretokenized_batches(corpus, data, args):
    import datasets
    from transformers import DataCollatorForLanguageModeling

    tok = hf_tokenizer(data)
    tokenize, group = run_mlm_maps(tok, args.seq_len)
    ds = datasets.load_dataset("json", data_files=[str(p) for p in corpus], split="train")
    ds = ds.map(tokenize, batched=True, remove_columns=ds.column_names)  # preprocessing: not timed
    ds = ds.map(group, batched=True)
    collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
    log(f"  hf_pretokenized: {len(ds):,} samples of {args.seq_len}")
    # One DataLoader with persistent workers: a new epoch does not restart them (run_mlm's epochs are long).
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, collate_fn=collator, num_workers=args.workers,
                        persistent_workers=args.workers > 0)
    return lambda: forever(lambda: loader)


class RawMemmap(IterableDataset):
    """Batches of raw 512-token windows read straight from the memory-mapped shards at random places: one
    gather per batch, and the same shared-memory hand-off as Graft's loader (the ceiling for both)."""

    def __init__(self, data: Path, length: int, batch_size: int, prefetch: int):
        self.data, self.length, self.batch_size, self.prefetch = data, length, batch_size, prefetch

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info else 0
        ring = WorkerRing(worker, self.prefetch + 2)
        manifest = Manifest.load(self.data)
        maps = [np.asarray(np.memmap(self.data / s.path, dtype=manifest.dtype, mode="r", shape=(s.tokens,)))
                for s in manifest.shards]
        rng = np.random.default_rng(worker)
        window = np.arange(self.length)
        while True:
            shard = maps[rng.integers(len(maps))]
            starts = rng.integers(0, len(shard) - self.length, size=self.batch_size)
            yield ring.pack({"input_ids": torch.from_numpy(shard[starts[:, None] + window].astype(np.int64))})


def memmap_batches(data, args):
    receiver = RingReceiver()
    loader = DataLoader(RawMemmap(data, args.seq_len, args.batch_size, prefetch=4), batch_size=None,
                        num_workers=args.workers, prefetch_factor=4)
    return (receiver.unpack(message) for message in loader)


def mds_samples_per_s(data: Path, work: Path, args) -> float | None:
    venv = Path(args.mds_venv)
    python = venv / "bin" / "python"
    if not python.exists():
        log(f"  creating {venv} for mosaicml-streaming ({', '.join(MDS_REQUIREMENTS)})")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *MDS_REQUIREMENTS], check=True)
    result = subprocess.run([str(python), str(REPO / "bench" / "mds_side.py"), "--dataset", str(data),
                             "--mds", str(work / "mds"), "--seq-len", str(args.seq_len), "--batch-size",
                             str(args.batch_size), "--workers", str(args.workers), "--batches", str(args.batches),
                             "--warmup", str(args.warmup),
                             "--min-seconds", str(args.min_seconds)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": ""})
    if result.returncode != 0:
        log(f"  mosaicml-streaming side failed:\n{result.stderr[-3000:]}")
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])["samples_per_s"]


def time_to_first_batch(data: Path, args, consumed: int) -> float:
    start = time.perf_counter()
    loader = graft_loader(data, args, consumed)  # opening is part of resuming
    it = iter(loader)
    batch = next(it)
    elapsed = time.perf_counter() - start
    assert batch["input_ids"].shape == (args.batch_size, args.seq_len)
    it.close()
    return elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "graft-bench-loader"),
                    help="scratch directory, reused across runs (default: %(default)s)")
    ap.add_argument("--copies", type=int, default=4, help="sample corpus repetitions (default: %(default)s)")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers on every side (default: 2)")
    ap.add_argument("--batches", type=int, default=150, help="timed batches per side (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of all sides; medians count")
    ap.add_argument("--min-seconds", type=float, default=1.5, help="timed window per side and round, at least")
    ap.add_argument("--ttfb-repeats", type=int, default=21,
                    help="worker start-up dominates and varies: many runs, the median counts (default: %(default)s)")
    ap.add_argument("--mds-venv", default=str(REPO / "bench" / ".venv-mds"),
                    help="virtual environment for mosaicml-streaming, created on first use (default: %(default)s)")
    ap.add_argument("--skip-mds", action="store_true")
    args = ap.parse_args()
    work = Path(args.work)
    corpus = make_corpus(work, args.copies)
    data = work / "graft"
    prepare(corpus, data, vocab_size=8192, progress=False)  # a no-op once prepared
    log(f"corpus: {sum(p.stat().st_size for p in corpus) / 1e6:.1f} MB, "
        f"{Manifest.load(data).total_tokens:,} tokens; {args.batches} batches of {args.batch_size} x {args.seq_len}, "
        f"{args.workers} workers")

    # Every side is timed in each round, rounds interleaved, and its median counts: on a shared machine a
    # burst of someone else's work then spoils one round of one side, not the figure.
    sides = {
        "graft": lambda: iter(graft_loader(data, args)),
        # diagnostic: the loader's own cost, without masking
        "graft_unmasked": lambda: iter(graft_loader(data, args, collate=raw_tokens)),
        "memmap": lambda: memmap_batches(data, args),
        "hf_pretokenized": hf_pretokenized_batches(corpus, data, args),  # run_mlm.py; preprocessing not timed
        "hf_streaming": hf_streaming_batches(corpus, data, args),
    }
    rounds = {name: [] for name in [*sides, *([] if args.skip_mds else ["mds"])]}
    n, w, b = args.batches, args.warmup, args.batch_size
    for r in range(args.rounds):
        for name, make in sides.items():
            log(f"round {r + 1}/{args.rounds}: {name} ...")
            batches = make()
            rounds[name].append(timed(batches, n, w, b, args.min_seconds))
            del batches  # shuts its workers down before the next side runs
        if not args.skip_mds:
            log(f"round {r + 1}/{args.rounds}: mosaicml-streaming ...")
            rounds["mds"].append(mds_samples_per_s(data, work, args))
    rate = {name: statistics.median(v) if None not in v else None for name, v in rounds.items()}
    log("time to first batch ...")
    ttfb = {0: [], 10 ** 8: []}
    for _ in range(args.ttfb_repeats):
        for consumed in ttfb:  # interleaved, so drift on a shared machine hits both alike
            ttfb[consumed].append(time_to_first_batch(data, args, consumed))
    ttfb0, ttfb_resume = statistics.median(ttfb[0]), statistics.median(ttfb[10 ** 8])

    log("samples/s (median): " + ", ".join(f"{k} {v:,.0f}" if v else f"{k} n/a" for k, v in rate.items()))
    log("samples/s per round: " + "; ".join(f"{k} " + " ".join(f"{x:,.0f}" if x else "n/a" for x in v)
                                            for k, v in rounds.items()))
    log(f"time to first batch (median of {args.ttfb_repeats}): at 0 {ttfb0 * 1e3:.1f} ms, "
        f"resumed at 1e8 {ttfb_resume * 1e3:.1f} ms")
    ratio = lambda other: round(rate["graft"] / rate[other], 3) if rate.get(other) else None  # noqa: E731
    print(json.dumps({"loader_vs_hf_streaming": ratio("hf_streaming"),
                      "loader_vs_hf_pretokenized": ratio("hf_pretokenized"), "loader_vs_mds": ratio("mds"),
                      "loader_vs_memmap": ratio("memmap"), "resume_ttfb_ratio": round(ttfb_resume / ttfb0, 3)}))


if __name__ == "__main__":
    main()
