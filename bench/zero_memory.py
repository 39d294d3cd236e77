"""Per-rank bytes of parameters, gradients and optimizer state at ZeRO 0-3 on 2 ranks, against the ZeRO paper.

    PYTHONPATH=. python bench/zero_memory.py [--precision bf16]

For each stage, 2 ranks (torchrun, CPU/gloo or GPUs) build Graft's engine around a BERT of ~17M parameters,
take one optimizer step (so Adam's moments exist), run the backward of a second step and, with gradients held
and before the update, add up the bytes of every distinct tensor storage that holds parameters, gradients or
optimizer state on the rank: the module's parameters (ZeRO-3: their partitions) and gradients, and every tensor
reachable from DeepSpeed's optimizer (fp32 master copies, moments, gradient partitions, flat buffers).
Communication buckets are made small (1e5 elements) so they do not blur the figure.

The formulas (Rajbhandari et al., 2020; Psi parameters, N ranks), mixed-precision Adam (bf16/fp16):
16 Psi at stage 0, 4 Psi + 12 Psi / N at stage 1, 2 Psi + 14 Psi / N at stage 2, 16 Psi / N at stage 3;
fp32 Adam (4-byte weights and gradients, no master copy): 16, 8 + 8/N, 4 + 12/N, 16/N.
Prints `zero_mem_ratio_stage0` .. `zero_mem_ratio_stage3` (measured / formula, rank 0) last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import REPO_ROOT, mlm_batches, prepared_corpus  # noqa: E402

WORK = Path(tempfile.gettempdir()) / "graft-bench" / "zero_memory"
WORLD = 2


def formula_bytes_per_param(stage: int, precision: str, n: int) -> float:
    if precision == "fp32":
        return [16, 8 + 8 / n, 4 + 12 / n, 16 / n][stage]
    return [16, 4 + 12 / n, 2 + 14 / n, 16 / n][stage]


def _tensors(obj, seen_objects: set, out: list, depth: int = 0) -> None:
    """Every tensor reachable from `obj` through attributes, lists, tuples and dicts (not through modules)."""
    import torch

    if id(obj) in seen_objects or depth > 6:
        return
    seen_objects.add(id(obj))
    if isinstance(obj, torch.Tensor):
        out.append(obj)
        if getattr(obj, "grad", None) is not None:
            out.append(obj.grad)
        if hasattr(obj, "ds_tensor"):
            out.append(obj.ds_tensor)
        return
    if isinstance(obj, torch.nn.Module):
        return
    if isinstance(obj, dict):
        items = list(obj.keys()) + list(obj.values())
    elif isinstance(obj, (list, tuple, set)):
        items = list(obj)
    elif hasattr(obj, "__dict__") and type(obj).__module__.startswith(("deepspeed", "torch.optim", "pretrain")):
        items = list(vars(obj).values())
    else:
        return
    for item in items:
        _tensors(item, seen_objects, out, depth + 1)


def storage_bytes(tensors) -> int:
    storages = {}
    for t in tensors:
        if t.numel() == 0:
            continue
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
    return sum(storages.values())


def worker(stage: int, precision: str) -> None:
    import torch

    from pretrain.construction import model_construction
    from pretrain.distributed import exit_process, init_distributed
    from pretrain.engine import Engine
    from pretrain.engine_config import EngineConfig
    from pretrain.models import build_model
    from pretrain.models.bert import BertConfig
    from pretrain.optim import OptimConfig, build_optimizer

    rank, world = init_distributed()
    data = WORK / "data_0_400"
    batches, loss_fn = mlm_batches(data, 128, 4, 2, rank=rank, world=world)
    small = {"reduce_bucket_size": 100_000, "allgather_bucket_size": 100_000, "stage3_prefetch_bucket_size": 100_000,
             "stage3_param_persistence_threshold": 0, "stage3_max_live_parameters": 100_000}
    cfg = EngineConfig(zero_stage=stage, precision=precision, global_batch_size=4 * world, micro_batch_size=4,
                       deepspeed={"zero_optimization": small if stage else {}})
    torch.manual_seed(0)
    with model_construction(cfg, world):  # as `graft train` builds it: at ZeRO-3 partitioned from the start
        model = build_model(BertConfig(vocab_size=4000, hidden_size=512, num_layers=4, num_heads=8,
                                       intermediate_size=2048, max_position_embeddings=128))
    psi = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    engine = Engine(cfg, world, WORK, model, build_optimizer(model, OptimConfig()))
    engine.step([batches[0]], loss_fn, 1e-4)  # creates Adam's moments
    engine.model.backward(loss_fn(engine.model, {k: v.to(engine.device) for k, v in batches[1].items()}))
    found = []
    _tensors([list(engine.model.module.parameters()), engine.model.optimizer], set(), found)
    measured = storage_bytes(found)
    engine.model.step()
    if rank == 0:
        print(json.dumps({"stage": stage, "params": psi, "bytes": measured,
                          "bytes_per_param": measured / psi}))
    engine.close()
    exit_process(0)  # as graft's workers do: finalizing the interpreter can abort a rank (gloo's threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.precision)
        return
    prepared_corpus(WORK, 0, 400)
    ratios = {}
    for stage in range(4):
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONWARNINGS": "ignore"}
        out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                              f"--nproc_per_node={WORLD}", __file__, "--worker", str(stage), "--precision",
                              args.precision], capture_output=True, text=True, env=env, cwd=REPO_ROOT)
        if out.returncode != 0:
            raise SystemExit(f"stage {stage} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
        result = json.loads([l for l in out.stdout.splitlines() if l.startswith("{")][-1])
        expected = formula_bytes_per_param(stage, args.precision, WORLD)
        ratios[f"zero_mem_ratio_stage{stage}"] = round(result["bytes_per_param"] / expected, 4)
        print(f"stage {stage}: {result['bytes_per_param']:.2f} bytes/param on rank 0 "
              f"(formula {expected:.2f}; {result['params']:,} parameters)", flush=True)
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
