"""mosaicml-streaming's side of bench/loader.py, run by the Python of its own virtual environment.

mosaicml-streaming 0.13 pins older numpy / transformers / huggingface_hub than Graft, so bench/loader.py
runs this file with the interpreter of a separate venv. It writes the Graft dataset's packed segments as
MDS shards, then times `StreamingDataset` through a `DataLoader` with Graft's own MLM collator, so that
only the loaders differ. Prints one JSON line: {"samples_per_s": ...}.
"""

import argparse
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # Graft's collator, from this checkout
from data_pipeline.collators.mlm import MLMCollator, MLMConfig  # noqa: E402
from data_pipeline.packing import PackedSegments, Segment, SegmentBatch  # noqa: E402
from data_pipeline.shards import Manifest  # noqa: E402


class Collate:
    def __init__(self, mlm):
        self.mlm = mlm

    def __call__(self, rows):
        return self.mlm(SegmentBatch.of([Segment(index=int(r["index"]), tokens=r["tokens"].astype(np.int64),
                                                 doc_starts=r["doc_starts"][1:]) for r in rows]))


def import_streaming():
    """`import streaming` also imports its vision datasets, hence torchvision; PyPI's torchvision wheels are
    built for the CUDA torch and fail to load beside the CPU torch of this venv ("operator torchvision::nms
    does not exist"). Nothing here uses the vision datasets, so that subpackage is left out when it fails."""
    try:
        import streaming  # noqa: F401
    except RuntimeError as exc:
        if "torchvision" not in str(exc):
            raise
        for name in [m for m in sys.modules if m.startswith(("streaming", "torchvision"))]:
            del sys.modules[name]
        sys.modules["streaming.vision"] = types.ModuleType("streaming.vision")
        import streaming  # noqa: F401
        print("note: streaming.vision left out (torchvision does not load beside the CPU torch)", file=sys.stderr)


def main():
    import_streaming()
    from streaming import MDSWriter, StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--mds", required=True)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=0.0)
    args = ap.parse_args()

    manifest = Manifest.load(args.dataset)
    mlm = MLMCollator(MLMConfig(), manifest.special_tokens, manifest.vocab_size, args.seq_len, 0)
    mds = Path(args.mds)
    if not (mds / "index.json").exists():
        segments = PackedSegments(args.dataset, mlm.raw_length)
        with MDSWriter(out=str(mds), columns={"tokens": "ndarray:uint16", "doc_starts": "ndarray:int64",
                                              "index": "int"}, compression=None, size_limit=1 << 26) as writer:
            for i in range(len(segments)):
                tokens, starts = segments.read(i)
                # MDS cannot store an empty array: a leading -1, dropped when read.
                writer.write({"tokens": tokens.astype(np.uint16), "doc_starts": np.concatenate([[-1], starts]),
                              "index": i})
    clean_stale_shared_memory()
    ds = StreamingDataset(local=str(mds), shuffle=True, shuffle_seed=0, batch_size=args.batch_size)
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers,
                                         collate_fn=Collate(mlm), persistent_workers=args.workers > 0)
    done, started = 0, None

    def finished():  # bench/loader.py's rule: at least `batches` batches and `min_seconds` after warm-up
        return started is not None and done - args.warmup >= args.batches and \
            time.perf_counter() - started >= args.min_seconds

    while not finished():  # several epochs when the corpus is small
        for _ in loader:
            done += 1
            if done == args.warmup:
                started = time.perf_counter()
            if finished():
                break
    elapsed = time.perf_counter() - started
    print(json.dumps({"samples_per_s": (done - args.warmup) * args.batch_size / elapsed}))


if __name__ == "__main__":
    main()
