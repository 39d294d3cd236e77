"""Run by test_zero_init.py under torchrun (2 ranks): builds every family under ZeRO-3's model construction
context and checks, on each rank, that no parameter is held whole and that the weights equal a plain build;
then measures the peak resident growth while building a deeper model, under ZeRO-3 and plainly."""

import json
import sys
from pathlib import Path

import deepspeed
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for family_models
from family_models import graft_configs  # noqa: E402
from pretrain.construction import construct_model, model_construction  # noqa: E402
from pretrain.distributed import exit_process, init_distributed  # noqa: E402
from pretrain.engine_config import EngineConfig  # noqa: E402
from pretrain.models import build_model  # noqa: E402
from pretrain.models.config import MLM_BIAS_FAMILIES, ModelConfig  # noqa: E402
from pretrain.models.encoder import MLMHead  # noqa: E402

# Many equal layers, so that no single module is a large share of the model.
DEEP = ModelConfig(family="bert", vocab_size=1000, hidden_size=256, num_layers=48, num_heads=4,
                   intermediate_size=1024, max_position_embeddings=64)


def resident_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def construction_growth(stage: int, world: int) -> tuple[int, int]:
    """(peak resident growth while building DEEP at `stage`, the model's fp32 bytes)."""
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident set, to the current one
    before = resident_bytes("VmRSS:")
    with model_construction(EngineConfig(zero_stage=stage, global_batch_size=2, micro_batch_size=1), world):
        model = build_model(DEEP)
    growth = resident_bytes("VmHWM:") - before
    return growth, 4 * sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())


def output_bias_set(cfg: ModelConfig, world: int) -> bool:
    """Whether a unigram output bias given to the ZeRO-3 construction is every MLM head's bias (gathered)."""
    bias = torch.linspace(-9.0, -2.0, cfg.vocab_size)
    engine = EngineConfig(zero_stage=3, global_batch_size=2, micro_batch_size=1)
    model = construct_model(cfg, engine, world, output_bias=bias)
    heads = [m for m in model.modules() if isinstance(m, MLMHead)]
    with deepspeed.zero.GatheredParameters([h.bias for h in heads]):
        return bool(heads) and all(torch.equal(h.bias.data, bias) for h in heads)


def main(out: Path) -> None:
    rank, world = init_distributed()
    report = {}
    for name, cfg in graft_configs().items():
        torch.manual_seed(7)
        with model_construction(EngineConfig(zero_stage=3, global_batch_size=2, micro_batch_size=1), world):
            model = build_model(cfg)
        after_zero = torch.rand(4)  # the random stream continues where a plain build leaves it
        torch.manual_seed(7)
        plain = build_model(cfg)
        plain_state = plain.state_dict()
        params = dict(model.named_parameters())
        held = sum(p.numel() for p in params.values())  # what this rank holds as ordinary tensors
        local = {k: p.ds_tensor.numel() for k, p in params.items()}
        full = {k: p.ds_numel for k, p in params.items()}
        differ = []
        for key, p in params.items():
            with deepspeed.zero.GatheredParameters([p]):
                if not torch.equal(p.data, plain_state[key]):
                    differ.append(key)
        report[name] = {"held": held, "local": local, "full": full, "differ": differ,
                        "plain_params": sum(p.numel() for p in plain.parameters()),
                        "same_rng": torch.equal(after_zero, torch.rand(4))}
    growth, full = construction_growth(3, world)
    plain_growth, _ = construction_growth(0, world)
    report["memory"] = {"zero3_growth": growth, "plain_growth": plain_growth, "full": full}
    # after the memory measure, which the freed models would disturb
    report["output_bias"] = {name: output_bias_set(cfg, world) for name, cfg in graft_configs().items()
                             if cfg.family in MLM_BIAS_FAMILIES}
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    # Leave the process group cleanly, and the process as graft's workers do: finalizing the interpreter while
    # gloo's threads release finished work can abort a rank.
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    exit_process(0)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
