"""Export benchmark: `graft export` of a ZeRO-3 checkpoint written by 2 ranks (BERT-large, 336M parameters)
against writing the same tensors once with `safetensors.torch.save_file`.

    python bench/export.py [--workdir DIR] [--preset configs/models/bert-large.yaml]

Steps: prepare a small dataset, train one step of the preset under ZeRO-3 on 2 CPU processes (a real
checkpoint: fp32 partitions and Adam moments), then, each in a fresh process, (a) export it and (b) write
its tensors with safetensors directly. Export time covers the whole `export()` call: streaming the shards,
writing safetensors, config, tokenizer and model card, and the verification with transformers. The
baseline's time covers only `save_file` on tensors already in memory. For context it also runs DeepSpeed's own
consolidation (`zero_to_fp32`) followed by `save_file`, what users of other systems run today. Peak memory is the export process's
peak resident set (VmHWM, everything included: Python, torch, transformers) over the fp32 model size.

Goals: export_time_ratio <= 2, export_peak_mem_ratio <= 1.5. The figures are printed last, as one JSON line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(mode: str, run_dir: Path, out: Path) -> None:
    """Runs in its own process so its peak memory is its own."""
    if mode == "export":
        from pretrain.export import export

        start = time.perf_counter()
        export(run_dir, out)
        seconds = time.perf_counter() - start
    elif mode == "zero_to_fp32":  # context: what users run today, DeepSpeed's consolidation then save_file
        from safetensors.torch import save_file

        from pretrain import checkpoint

        start = time.perf_counter()
        state = checkpoint.read_model_weights(checkpoint.latest_checkpoint(run_dir))
        out.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in state.items() if k != "head.decoder.weight"},
                  str(out / "model.safetensors"))
        seconds = time.perf_counter() - start
    else:
        from safetensors.torch import save_file

        from pretrain import checkpoint
        from pretrain.config import load_config
        from pretrain.hf.convert import graft_keys
        from pretrain.zero_checkpoint import ZeroCheckpoint

        cfg = load_config(run_dir / "config.yaml")
        reader = ZeroCheckpoint(checkpoint.latest_checkpoint(run_dir) / "engine")
        tensors = {k: reader.tensor(k) for k in graft_keys(cfg.model)}
        out.mkdir(parents=True)
        start = time.perf_counter()
        save_file(tensors, str(out / "model.safetensors"))
        seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss": peak_rss_bytes()}))


def run_child(mode: str, run_dir: Path, out: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", mode, str(run_dir), str(out)],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if result.returncode != 0:
        sys.exit(f"{mode} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", help="keep the dataset, run and exports here (default: a temporary directory)")
    parser.add_argument("--preset", default=str(REPO / "configs" / "models" / "bert-large.yaml"))
    parser.add_argument("--child", nargs=3, metavar=("MODE", "RUN_DIR", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return

    from data_pipeline.prepare import prepare

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="graft-bench-export-"))
    corpus = work / "corpus.jsonl"
    if not (work / "data" / "manifest.json").is_file():
        work.mkdir(parents=True, exist_ok=True)
        with open(REPO / "data_pipeline" / "sample_corpus" / "python_docs.jsonl") as src:
            corpus.write_text("".join(itertools.islice(src, 200)))
        prepare([corpus], work / "data", vocab_size=2000)
    run_dir = work / "run"
    if not (run_dir / "checkpoints" / "latest").is_file():
        shutil.rmtree(run_dir, ignore_errors=True)
        train = subprocess.run(
            [sys.executable, "-m", "launch.cli", "train", args.preset, f"data.path={work / 'data'}",
             f"train.run_dir={run_dir}", "model.vocab_size=30522", "engine.zero_stage=3", "engine.precision=fp32",
             "engine.micro_batch_size=1", "engine.global_batch_size=2", "data.seq_len=32", "data.num_workers=0",
             "train.max_steps=1", "train.save_every=1", "--nproc", "2"],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
        if train.returncode != 0:
            sys.exit(f"training failed:\n{train.stderr[-4000:]}")
    for name in ("export", "baseline", "zero_to_fp32"):
        shutil.rmtree(work / name, ignore_errors=True)

    from pretrain import checkpoint
    from pretrain.zero_checkpoint import ZeroCheckpoint

    reader = ZeroCheckpoint(checkpoint.latest_checkpoint(run_dir) / "engine")
    params = sum(shape.numel() for name, shape in reader.shapes.items() if name not in reader.buffers)
    fp32_bytes = 4 * sum(shape.numel() for shape in reader.shapes.values())
    baseline = run_child("baseline", run_dir, work / "baseline")
    exported = run_child("export", run_dir, work / "export")
    consolidated = run_child("zero_to_fp32", run_dir, work / "zero_to_fp32")
    print(f"checkpoint: ZeRO-{reader.stage}, {reader.world} ranks, {params:,} parameters "
          f"({fp32_bytes / 2**30:.2f} GiB fp32)")
    print(f"safetensors save_file: {baseline['seconds']:.2f} s; graft export: {exported['seconds']:.2f} s, "
          f"peak RSS {exported['peak_rss'] / 2**30:.2f} GiB (streaming, conversion and verification with transformers)")
    print(f"for context, DeepSpeed's zero_to_fp32 + save_file (no conversion, no check): "
          f"{consolidated['seconds']:.2f} s, peak RSS {consolidated['peak_rss'] / 2**30:.2f} GiB")
    print(json.dumps({"export_time_ratio": round(exported["seconds"] / baseline["seconds"], 3),
                      "export_peak_mem_ratio": round(exported["peak_rss"] / fp32_bytes, 3), "params": params}))


if __name__ == "__main__":
    main()
