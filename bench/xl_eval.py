"""Evaluation speed with Transformer-XL memory versus re-encoding a sliding window (Dai et al. 2019, Table 9).

    PYTHONPATH=. python bench/xl_eval.py [--segment 128 --segments 8 --windows 5]

Both score every position of a long text with the same attention length A (keys each scored position sees):
- with memory: segments of `--segment` tokens, each attending to itself and a memory of A - segment earlier
  positions; one forward scores `segment` positions;
- without memory (the baseline): for every scored position, one forward over the window of the A tokens
  ending there, scoring only its last position.
The figure is the baseline's time per scored position over the memory model's, at A = 800 and 1,600. Both use
the same model (the quickstart's sizes with XL relative positions), in eval mode, fp32 on this machine's CPU;
the baseline's time per position is the median over `--windows` windows (each costs one whole forward).

Prints, last, one JSON line: {"xl_eval_speedup_800": ..., "xl_eval_speedup_1600": ...}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from pretrain.models import build_model
from pretrain.models.config import ModelConfig, RecurrenceConfig
from pretrain.models.memory import MemoryCache


def model_for(attention: int, segment: int) -> torch.nn.Module:
    cfg = ModelConfig(vocab_size=8192, hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512,
                      positions="xl", recurrence=RecurrenceConfig(mem_len=attention - segment))
    torch.manual_seed(0)
    return build_model(cfg).eval()


def per_position_with_memory(model, ids: torch.Tensor, segment: int, warm_segments: int) -> float:
    """Seconds per scored position, once the memory is full (the first `warm_segments` fill it, untimed)."""
    cache = MemoryCache()
    pieces = ids.split(segment, dim=1)
    with torch.no_grad():
        for piece in pieces[:warm_segments]:
            model({"input_ids": piece, "memory": cache})
        start = time.perf_counter()
        for piece in pieces[warm_segments:]:
            model({"input_ids": piece, "memory": cache, "positions": torch.ones_like(piece, dtype=torch.bool)})
        elapsed = time.perf_counter() - start
    return elapsed / (segment * (len(pieces) - warm_segments))


def per_position_sliding(model, ids: torch.Tensor, attention: int, windows: int) -> float:
    """Seconds per scored position when each needs its own forward over the A tokens ending there."""
    times = []
    with torch.no_grad():
        model({"input_ids": ids[:, :attention]})  # warm-up
        for end in range(attention, attention + windows):
            window = ids[:, end - attention:end]
            last = torch.zeros_like(window, dtype=torch.bool)
            last[:, -1] = True
            start = time.perf_counter()
            model({"input_ids": window, "positions": last})
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segment", type=int, default=128, help="tokens per segment with memory (default 128)")
    parser.add_argument("--segments", type=int, default=8, help="timed segments with memory (default 8)")
    parser.add_argument("--windows", type=int, default=5, help="timed windows of the baseline (default 5)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    figures = {}
    for attention in (800, 1600):
        model = model_for(attention, args.segment)
        warm = -(-(attention - args.segment) // args.segment)  # segments that fill the memory
        ids = torch.randint(5, 8192, (1, args.segment * (warm + args.segments) + attention + args.windows),
                            generator=torch.Generator().manual_seed(1))
        xl = per_position_with_memory(model, ids[:, :args.segment * (warm + args.segments)], args.segment, warm)
        window = per_position_sliding(model, ids, attention, args.windows)
        print(f"attention {attention}: with memory {xl * 1e3:.3f} ms per position, sliding window "
              f"{window * 1e3:.1f} ms per position, {window / xl:.0f}x")
        figures[f"xl_eval_speedup_{attention}"] = round(window / xl, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
