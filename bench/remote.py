"""Remote datasets: Graft's training loader through a slow, far-away store, versus the same loader on the local copy.

Run: python bench/remote.py   [--latency-ms 100] [--mbps 20] [--shard-tokens 100000] [--batches 1500]
                              [--step-ms 20] [--rounds 3] [--train-steps 20] [--prefetch-shards N]

The sample corpus is prepared in small shards (`--shard-tokens`: 10 of them by default, each lasting ~50 batches,
about a second: longer than a fetch and a retry's wait, the regime where the prefetch depth covers the latency)
and served by tests/fault_http.py's loopback server, which waits `--latency-ms` before answering every request
and sends at most `--mbps` MB/s per response. The loader is the training one (the quickstart's MLM collator and
batch, 2 DataLoader workers, a cache of 8 shards with `data.shuffle_window_shards=2`, the defaults of
`data.remote.*`), and its consumer spends `--step-ms` on each batch as a training step would: with nothing to
wait for, both sides run at the consumer's pace, and what the remote side loses is the time it waits for shards.

  remote_vs_local_throughput  batches/s from the server over batches/s from the local copy (median of --rounds
                              interleaved rounds, each remote round with an empty cache); goal >= 0.9
  remote_retry_overhead       the remote read's time when the first request for every shard answers 503
                              (retried after data.remote.backoff_s, 1 s by default), over its time without;
                              goal <= 1.1
  remote_data_wait_frac       data_wait_frac (pretrain/metrics.py: the time the trainer waited for batches over
                              the wall time, logged every train.log_every steps) over a short `graft train
                              configs/quickstart.yaml` on 1 process reading from the server, the mean of its
                              logged values; goal < 0.05. local_data_wait_frac: the same run on the local copy.

The last line printed is one JSON object with these figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the loopback server the tests use too
from fault_http import FaultServer, Rule  # noqa: E402

from bench.common import SAMPLE_CORPUS  # noqa: E402
from data_pipeline.fetch import RemoteConfig  # noqa: E402
from data_pipeline.loader import DataConfig, Loader  # noqa: E402
from data_pipeline.prepare import prepare  # noqa: E402
from data_pipeline.shards import Manifest  # noqa: E402

SEQ_LEN, BATCH = 64, 32  # configs/quickstart.yaml's
WINDOW, CACHE_SHARDS = 2, 8


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def dataset(work: Path, shard_tokens: int) -> Path:
    out = work / "served" / f"data_{shard_tokens}"  # the server's root is its parent
    if not (out / "manifest.json").is_file():
        prepare([SAMPLE_CORPUS], out, vocab_size=8192, shard_tokens=shard_tokens)
    return out


def read_time(path: str, cache: Path, cache_bytes: int, batches: int, step_s: float, remote: RemoteConfig) -> float:
    """Seconds to read and consume `batches` MLM batches of the loader on `path`, from its first batch's request."""
    from pretrain.objectives import ObjectiveConfig, build_objective
    from pretrain.objectives.base import CollatorContext

    cfg = DataConfig(path=path, seq_len=SEQ_LEN, num_workers=2, cache_dir=str(cache), cache_bytes=cache_bytes,
                     shuffle_window_shards=WINDOW, remote=remote)
    context = CollatorContext(Manifest.load(path, cfg.remote), SEQ_LEN, 0, path)
    collate, _ = build_objective(ObjectiveConfig(), context)
    loader = Loader(cfg, collate.raw_length, collate, seed=0, rank=0, world=1, micro_batch=BATCH)
    start = time.perf_counter()
    it = iter(loader)
    for i in range(batches):
        next(it)
        if i == 0:
            first = time.perf_counter() - start
        time.sleep(step_s)  # the training step
    elapsed = time.perf_counter() - start
    del it
    log(f"  first batch after {first:.2f} s")  # the workers' start, the first window's shards
    return elapsed


def loader_figures(data: Path, args, work: Path) -> dict:
    largest = max(s.bytes for s in Manifest.load(data).shards)
    budget = CACHE_SHARDS * largest
    step = args.step_ms / 1000
    remote = RemoteConfig(**({"prefetch_shards": args.prefetch_shards} if args.prefetch_shards is not None else {}))
    times = {"local": [], "remote": [], "retry": []}
    for r in range(args.rounds):
        for side in times:
            cache = work / f"cache_{side}_{r}"
            shutil.rmtree(cache, ignore_errors=True)
            if side == "local":
                t = read_time(str(data), cache, budget, args.batches, step, remote)
                log(f"round {r} local: {t:.2f} s")
            else:
                rules = [Rule("*.bin", "503", first=1)] if side == "retry" else []
                with FaultServer(data.parent, rules, latency_s=args.latency_ms / 1000,
                                 bytes_per_s=args.mbps * 1e6) as server:
                    t = read_time(f"{server.url}/{data.name}", cache, budget, args.batches, step, remote)
                    log(f"round {r} {side}: {t:.2f} s, {len(server.gets('*.bin'))} shard requests")
            times[side].append(t)
    local, remote, retry = (statistics.median(times[k]) for k in ("local", "remote", "retry"))
    log(f"medians: local {local:.2f} s, remote {remote:.2f} s, remote with a 503 per shard {retry:.2f} s "
        f"({args.batches} batches, {args.step_ms} ms each)")
    return {"remote_vs_local_throughput": round(local / remote, 3), "remote_retry_overhead": round(retry / remote, 3)}


def train_wait(path: str, work: Path, name: str, args) -> float:
    """The mean data_wait_frac of a short quickstart run on `path`."""
    run_dir = work / f"run_{name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "launch.cli", "train", str(REPO / "configs" / "quickstart.yaml"),
           f"data.path={path}", f"train.run_dir={run_dir}", f"train.max_steps={args.train_steps}",
           "train.log_every=10", "train.save_every=100000", f"data.cache_dir={work / f'cache_train_{name}'}",
           f"data.shuffle_window_shards={WINDOW}"] + \
        ([f"data.remote.prefetch_shards={args.prefetch_shards}"] if args.prefetch_shards is not None else [])
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"})
    if out.returncode:
        raise SystemExit(f"graft train on {path} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    waits = [json.loads(line)["data_wait_frac"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    log(f"{name} training: data_wait_frac per 10 steps {[round(w, 4) for w in waits]}")
    return statistics.fmean(waits)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-ms", type=float, default=100, help="wait before every response (default 100)")
    parser.add_argument("--mbps", type=float, default=20, help="bandwidth cap per response, MB/s (default 20)")
    parser.add_argument("--shard-tokens", type=int, default=100_000, help="tokens per shard (default 100,000)")
    parser.add_argument("--batches", type=int, default=1500, help="batches per loader read (default 1500)")
    parser.add_argument("--step-ms", type=float, default=20, help="the consumer's time per batch (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the loader reads (default 3)")
    parser.add_argument("--train-steps", type=int, default=20, help="steps of each training run (default 20)")
    parser.add_argument("--prefetch-shards", type=int, help="data.remote.prefetch_shards (default: its default)")
    parser.add_argument("--skip-training", action="store_true", help="the loader figures only")
    parser.add_argument("--work", type=Path, help="working directory (default: a temporary one)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="graft-bench-remote-"))
    data = dataset(work, args.shard_tokens)
    manifest = Manifest.load(data)
    log(f"{len(manifest.shards)} shards of {manifest.total_tokens // len(manifest.shards):,} tokens; latency "
        f"{args.latency_ms} ms, {args.mbps} MB/s")
    figures = loader_figures(data, args, work)
    if args.skip_training:
        print(json.dumps(figures))
        return
    with FaultServer(data.parent, latency_s=args.latency_ms / 1000, bytes_per_s=args.mbps * 1e6) as server:
        figures["remote_data_wait_frac"] = round(train_wait(f"{server.url}/{data.name}", work, "remote", args), 4)
    figures["local_data_wait_frac"] = round(train_wait(str(data), work, "local", args), 4)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
