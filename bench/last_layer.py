"""The last layer at the masked positions only: step time with and without it, same model, batch and optimizer.

    PYTHONPATH=. python bench/last_layer.py [--steps 60] [--mask 0.4] [--layers 2]

Trains the quickstart's BERT (hidden 128, 4 heads, sequence 64, vocabulary 4,096, micro-batch 8, no dropout) on
one thread, as each quickstart rank does, with the MLM loss on `--mask` of the positions. Steps alternate between
the full forward and the `logits_only` one (`pretrain/models/encoder.py`: the last layer's queries, output and
feed-forward only where the loss reads them), so that a busy machine slows both alike. Printed last, one JSON
line: `last_layer_step_ratio` (median logits_only step / median full step) and Graft's FLOP count of each
(`last_layer_flops_ratio`). Random tokens: the step's cost does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import median  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="timed steps of each kind (default: %(default)s)")
    parser.add_argument("--mask", type=float, default=0.4, help="share of positions with a label (default: 0.4)")
    parser.add_argument("--layers", type=int, default=2, help="encoder layers (default: %(default)s)")
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    from data_pipeline.collators.mlm import IGNORE
    from pretrain.flops import batch_flops
    from pretrain.models import build_model
    from pretrain.models.config import ModelConfig
    from pretrain.optim import OptimConfig, build_optimizer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    batch, seq, vocab = 8, 64, 4096
    cfg = ModelConfig(family="bert", vocab_size=vocab, hidden_size=128, num_layers=args.layers, num_heads=4,
                      intermediate_size=512, max_position_embeddings=seq, hidden_dropout=0.0, attention_dropout=0.0)
    model = build_model(cfg).train()
    optimizer = build_optimizer(model, OptimConfig())
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (batch, seq), generator=generator)
    positions = torch.rand(batch, seq, generator=generator) < args.mask
    labels = torch.where(positions, ids, IGNORE)

    def step(logits_only: bool) -> float:
        start = time.perf_counter()
        logits = model({"input_ids": ids, "positions": positions, "logits_only": logits_only}).logits
        F.cross_entropy(logits, labels[positions]).backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - start

    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(args.steps + 5):
        for logits_only in (False, True):
            seconds = step(logits_only)
            if i >= 5:  # the first steps allocate
                times[logits_only].append(seconds)
    full, sparse = median(times[False]), median(times[True])
    micro = [{"input_ids": ids, "labels": labels}]
    flops = batch_flops(cfg, micro, logits_only=True) / batch_flops(cfg, micro)
    print(f"full step {1000 * full:.1f} ms, last layer at the masked positions {1000 * sparse:.1f} ms")
    print(json.dumps({"last_layer_step_ratio": round(sparse / full, 4), "last_layer_flops_ratio": round(flops, 4),
                      "mask": args.mask, "layers": args.layers, "steps": args.steps}))


if __name__ == "__main__":
    main()
