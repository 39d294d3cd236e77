"""Shared by the benchmarks: a prepared sample corpus, fixed MLM batches, and timing helpers."""

from __future__ import annotations

import contextlib
import itertools
import json
import mmap
import os
import statistics
import subprocess
import sys
from pathlib import Path

from data_pipeline.sample_corpus import SAMPLE_CORPUS

REPO_ROOT = Path(__file__).resolve().parent.parent
PAGE_REPORTING_ORDER = Path("/sys/module/page_reporting/parameters/page_reporting_order")
MADV_POPULATE_WRITE = 23  # linux/mman.h; Python's mmap module does not name it


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
    from pretrain.objectives.base import CollatorContext

    context = CollatorContext(Manifest.load(data), seq_len, seed, str(data))
    collate, loss_fn = build_objective(ObjectiveConfig(), context)
    loader = Loader(DataConfig(path=str(data), seq_len=seq_len, num_workers=0), collate.raw_length, collate,
                    seed, rank, world, batch)
    return list(itertools.islice(iter(loader), count)), loss_fn


def run_samples(cfg) -> int:
    """Samples a run of `cfg` trains on (train.max_steps steps, the batch ramp counted)."""
    from pretrain.curriculum import batch_size_at

    return sum(batch_size_at(s, cfg.curriculum, cfg.engine.global_batch_size) for s in range(cfg.train.max_steps))


def run_flops(cfg) -> float:
    """Graft's FLOP count (pretrain/flops.py) of a whole MLM run of `cfg`: its masking rate, batch ramp and
    sequence curriculum counted."""
    from pretrain.curriculum import batch_size_at, seq_len_at
    from pretrain.flops import flops_per_sample

    seq = cfg.data.seq_len
    labelled = max(1, round(cfg.objective.mlm.mask_prob * (seq - 2)))  # per row: [CLS] ... [SEP]
    total = 0.0
    for step in range(cfg.train.max_steps):
        pieces = seq // seq_len_at(step, cfg.curriculum, seq)
        per_row = pieces * flops_per_sample(cfg.model, seq // pieces, labelled / pieces)
        total += batch_size_at(step, cfg.curriculum, cfg.engine.global_batch_size) * per_row
    return total


def run_worker(script: Path, *args: str) -> dict:
    """Run `script --worker ...` in a fresh process; its last stdout line is a JSON result."""
    out = subprocess.run([sys.executable, str(script), "--worker", *args], capture_output=True, text=True,
                         cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    if out.returncode != 0:
        raise SystemExit(f"{script.name} worker {args} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def median(xs: list[float]) -> float:
    return statistics.median(xs)


@contextlib.contextmanager
def host_backed_memory(nbytes: int):
    """Time memory-bound work as on bare metal, on a VM that hands freed memory back to its host.

    Such a VM (Firecracker with virtio-balloon free page reporting, as our 2-core machines are) returns every
    free block of 2^order pages to the host within milliseconds, and the next write to one traps into the
    hypervisor, which can multiply the time of writing into the page cache (bench/README.md, export.py).
    Inside this context reporting is paused (the kernel's `page_reporting_order` raised past the largest block
    order, which it accepts; root only; restored on exit) and `nbytes` of memory are touched once, so that
    freed pages stay backed. Yields a line saying what was done, for the benchmark's output.
    """
    if not PAGE_REPORTING_ORDER.exists():
        yield "no free page reporting on this machine"
        return
    try:
        before = PAGE_REPORTING_ORDER.read_text().strip()
        # /proc/buddyinfo: "Node 0, zone Normal" then one free count per block order.
        orders = len(Path("/proc/buddyinfo").read_text().splitlines()[0].split()) - 4
        PAGE_REPORTING_ORDER.write_text(str(orders))
    except OSError as exc:
        yield (f"free page reporting left as is ({exc.strerror or exc}): on a VM that reports free pages, "
               "times include the hypervisor's page faults")
        return
    try:
        region = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        try:
            region.madvise(MADV_POPULATE_WRITE)
        except OSError:  # kernels before 5.14: touch a byte per page instead
            for offset in range(0, nbytes, mmap.PAGESIZE):
                region[offset] = 1
        region.close()
        yield (f"free page reporting paused ({PAGE_REPORTING_ORDER} {before} -> {orders}, restored after) and "
               f"{nbytes / 2**30:.1f} GiB touched: times are the software's, as on bare metal")
    finally:
        PAGE_REPORTING_ORDER.write_text(before)
