"""Export benchmark: `graft export` of a ZeRO-3 checkpoint written by 2 ranks (BERT-large, 336M parameters)
against writing the same tensors once with `safetensors.torch.save_file`.

    python bench/export.py [--workdir DIR] [--preset configs/models/bert-large.yaml]

Steps: prepare a small dataset, train one step of the preset under ZeRO-3 on 2 CPU processes (a real
checkpoint: fp32 partitions and Adam moments), then, each in a fresh process, (a) export it and (b) write
its tensors with safetensors directly. Export time covers the whole `export()` call: streaming the shards,
writing safetensors, config, tokenizer and model card, and the verification with transformers. The
baseline's time covers only `save_file` on tensors already in memory. In the same rounds it also runs DeepSpeed's
own consolidation (`zero_to_fp32`) followed by `save_file`, what users of other systems run today, which neither
converts nor checks: `export_vs_zero_to_fp32` is the verified export's median over its median. Peak memory is
the export process's peak resident set (VmHWM, everything included: Python, torch, transformers) over the
fp32 model size.

Fairness: both sides write the same tensors (the model's, tied ones once) into a fresh file, after `sync`
(no dirty pages left by the previous run to be written back meanwhile), with the checkpoint in the page cache
(training just wrote it). Each child imports its libraries before its clock starts (the baseline its
`safetensors`, the export `transformers`' classes and DeepSpeed, which unpickling its checkpoint needs); the
export's import time is reported too (`export_time_ratio_with_imports`), and so is an export with its
verification switched off (`export_time_ratio_without_check`), to show what streaming, conversion and writing
cost apart from the check: that loads the export with transformers and runs it and Graft's model, two more
passes over every weight. Baseline, export and unchecked export alternate for `--rounds` rounds; the ratios are
of the medians.

Timing on a VM: see bench.common.host_backed_memory, which this benchmark runs inside (why: bench/README.md).

Goals: export_time_ratio <= 2, export_peak_mem_ratio <= 1.5, export_vs_zero_to_fp32 <= 1 (a verified export no
slower than the unverified path). The figures are printed last, as one JSON line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import host_backed_memory  # noqa: E402
from data_pipeline.sample_corpus import SAMPLE_CORPUS  # noqa: E402


def peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def import_transformers_classes(run_dir: Path):
    """Import what export's check uses from transformers (it imports a class on first use), so that the clock
    measures the work and not the imports; returns the run's model config."""
    import transformers

    from pretrain.config import load_config
    from pretrain.hf.convert import parts

    cfg = load_config(run_dir / "config.yaml").model
    for part in parts(cfg):
        getattr(transformers, part.architecture)
    for name in ("AutoTokenizer", "PreTrainedTokenizerFast", "BertTokenizerFast"):
        getattr(transformers, name)
    return cfg


def child(mode: str, run_dir: Path, out: Path) -> None:
    """Runs in its own process so its peak memory is its own."""
    start = time.perf_counter()
    if mode == "export":
        import deepspeed  # noqa: F401  (unpickling DeepSpeed's checkpoint imports it)

        from pretrain.export import export

        import_transformers_classes(run_dir)
        imports = time.perf_counter() - start
        start = time.perf_counter()
        export(run_dir, out)
        seconds = time.perf_counter() - start
    elif mode == "unchecked":  # export without its verification: what streaming, conversion and writing cost
        import deepspeed  # noqa: F401

        import pretrain.export

        import_transformers_classes(run_dir)
        pretrain.export.verify = lambda *args: 0.0
        imports = time.perf_counter() - start
        start = time.perf_counter()
        pretrain.export.export(run_dir, out)
        seconds = time.perf_counter() - start
    elif mode == "zero_to_fp32":  # context: what users run today, DeepSpeed's consolidation then save_file
        from safetensors.torch import save_file

        from pretrain import checkpoint

        imports = time.perf_counter() - start
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

        imports = time.perf_counter() - start
        cfg = load_config(run_dir / "config.yaml")
        reader = ZeroCheckpoint(checkpoint.latest_checkpoint(run_dir) / "engine")
        tensors = {k: reader.tensor(k) for k in graft_keys(cfg.model)}
        out.mkdir(parents=True)
        os.sync()  # reading the tensors wrote nothing, but start from the same clean state as the export
        start = time.perf_counter()
        save_file(tensors, str(out / "model.safetensors"))
        seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "imports": imports, "peak_rss": peak_rss_bytes()}))


def run_child(mode: str, run_dir: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)  # a fresh file every time
    os.sync()  # no dirty pages of an earlier run are written back while this one is timed
    result = subprocess.run([sys.executable, __file__, "--child", mode, str(run_dir), str(out)],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if result.returncode != 0:
        sys.exit(f"{mode} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", help="keep the dataset, run and exports here (default: a temporary directory)")
    parser.add_argument("--preset", default=str(REPO / "configs" / "models" / "bert-large.yaml"))
    parser.add_argument("--rounds", type=int, default=3, help="alternating baseline/export runs; medians count")
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
        with open(SAMPLE_CORPUS) as src:
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
    from pretrain import checkpoint
    from pretrain.zero_checkpoint import ZeroCheckpoint

    reader = ZeroCheckpoint(checkpoint.latest_checkpoint(run_dir) / "engine")
    params = sum(shape.numel() for name, shape in reader.shapes.items() if name not in reader.buffers)
    fp32_bytes = 4 * sum(shape.numel() for shape in reader.shapes.values())
    baselines, exports, unchecked, consolidations = [], [], [], []
    # Touched up front: the largest working set, export's (the file it writes, transformers' model) and 1 GiB.
    with host_backed_memory(2 * fp32_bytes + (1 << 30)) as memory_note:
        for _ in range(args.rounds):
            baselines.append(run_child("baseline", run_dir, work / "baseline"))
            exports.append(run_child("export", run_dir, work / "export"))
            unchecked.append(run_child("unchecked", run_dir, work / "unchecked"))
            consolidations.append(run_child("zero_to_fp32", run_dir, work / "zero_to_fp32"))
    base_s = statistics.median(b["seconds"] for b in baselines)
    export_s = statistics.median(e["seconds"] for e in exports)
    export_cold_s = statistics.median(e["seconds"] + e["imports"] for e in exports)
    unchecked_s = statistics.median(u["seconds"] for u in unchecked)
    consolidated_s = statistics.median(c["seconds"] for c in consolidations)
    export_peak = max(e["peak_rss"] for e in exports)
    print(f"memory: {memory_note}")
    print(f"checkpoint: ZeRO-{reader.stage}, {reader.world} ranks, {params:,} parameters "
          f"({fp32_bytes / 2**30:.2f} GiB fp32)")
    print(f"safetensors save_file: {[round(b['seconds'], 2) for b in baselines]} s (median {base_s:.2f})")
    print(f"graft export: {[round(e['seconds'], 2) for e in exports]} s (median {export_s:.2f}; streaming, conversion "
          f"and verification with transformers), imports before it {[round(e['imports'], 2) for e in exports]} s, "
          f"peak RSS {export_peak / 2**30:.2f} GiB")
    print(f"export without its check (which loads the export with transformers, runs both models, compares): "
          f"{[round(u['seconds'], 2) for u in unchecked]} s (median {unchecked_s:.2f})")
    print(f"DeepSpeed's zero_to_fp32 + save_file (no conversion, no check): "
          f"{[round(c['seconds'], 2) for c in consolidations]} s (median {consolidated_s:.2f}), peak RSS "
          f"{max(c['peak_rss'] for c in consolidations) / 2**30:.2f} GiB")
    print(json.dumps({"export_time_ratio": round(export_s / base_s, 3),
                      "export_peak_mem_ratio": round(export_peak / fp32_bytes, 3), "params": params,
                      "export_time_ratio_with_imports": round(export_cold_s / base_s, 3),
                      "export_time_ratio_without_check": round(unchecked_s / base_s, 3),
                      "export_vs_zero_to_fp32": round(export_s / consolidated_s, 3)}))


if __name__ == "__main__":
    main()
