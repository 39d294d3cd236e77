"""`graft import`: a Hugging Face checkpoint of a supported class -> a Graft run config that starts from it.

The config records the HF directory in `model.init_from`; `build_model` then loads its weights through the
family's key map (in reverse). Base-model checkpoints (e.g. a `BertModel` saved for sentence embeddings)
carry no pretraining head: the head starts fresh, and the import says so.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import yaml

from data_pipeline.errors import UserError
from pretrain.hf import FAMILY_MAPS
from pretrain.hf.convert import from_hf, parts
from pretrain.objectives import NATIVE, OBJECTIVES
from pretrain.models.config import ModelConfig
from pretrain.models.encoder import QUERY_STREAM_KEY

ARCHITECTURE_OBJECTIVES = {"BertForPreTraining": "mlm_nsp", "AlbertForPreTraining": "mlm_sop",
                           "AlbertForMaskedLM": "mlm"}


@dataclass
class ImportResult:
    config_path: Path
    model: ModelConfig
    objective: str
    fresh: list[str]  # Graft keys the checkpoint lacks, initialized fresh


def read_hf_config(hf_dir: Path) -> ModelConfig:
    path = hf_dir / "config.json"
    if not path.is_file():
        raise UserError(f"{hf_dir} is not a Hugging Face model directory (no config.json)")
    d = json.loads(path.read_text())
    family = d.get("model_type")
    if family not in FAMILY_MAPS:
        raise UserError(f"{path}: model_type {family!r} is not supported; Graft imports {', '.join(FAMILY_MAPS)}")
    generator = hf_dir / "generator" / "config.json"
    try:
        return FAMILY_MAPS[family].from_hf_config(d, json.loads(generator.read_text()) if generator.is_file() else None)
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None


def load_hf_state(directory: Path) -> dict[str, torch.Tensor]:
    """The tensors of a Hugging Face model directory (safetensors, sharded or not, or pytorch_model.bin)."""
    from safetensors.torch import load_file

    files = sorted(directory.glob("model*.safetensors"))
    if files:
        state = {}
        for f in files:
            state.update(load_file(str(f)))
        return state
    if (directory / "pytorch_model.bin").is_file():
        return torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise UserError(f"{directory} holds no model.safetensors, model-*.safetensors or pytorch_model.bin")


def hf_state_dicts(hf_dir: Path, cfg: ModelConfig) -> list[dict | None]:
    """One state dict per part of the family (None for a part whose directory is absent)."""
    out = []
    for i, part in enumerate(parts(cfg)):
        directory = hf_dir / part.subdir
        out.append(load_hf_state(directory) if i == 0 or (directory / "config.json").is_file() else None)
    return out


def converted_state(cfg: ModelConfig, hf_dir: Path) -> tuple[dict, list[str]]:
    try:
        return from_hf(hf_state_dicts(hf_dir, cfg), cfg)
    except (KeyError, ValueError) as exc:
        raise UserError(f"{hf_dir}: {exc.args[0]}") from None


def load_pretrained(model: torch.nn.Module, cfg: ModelConfig) -> list[str]:
    """Load `cfg.init_from` into a freshly initialized `model`; returns the keys left fresh.

    Each submodule copies its own tensors through `Module.apply`, so that under `deepspeed.zero.Init`
    (ZeRO-3) only one submodule's parameters are gathered at a time.
    """
    state, fresh = converted_state(cfg, Path(cfg.init_from))
    if cfg.query_stream:  # XLNet's query stream exists only in pretraining: no export has it, it starts fresh
        fresh = [*fresh, QUERY_STREAM_KEY]
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if unexpected or missing != sorted(fresh):
        raise UserError(f"{cfg.init_from} does not fit model config (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}); re-run `graft import`")
    prefixes = {m: name + "." if name else "" for name, m in model.named_modules(remove_duplicate=False)}

    @torch.no_grad()
    def load_own(module: torch.nn.Module) -> None:
        own = itertools.chain(module.named_parameters(recurse=False), module.named_buffers(recurse=False))
        for name, tensor in own:
            key = prefixes[module] + name
            if key in state:
                tensor.copy_(state[key])

    model.apply(load_own)
    return fresh


def import_hf(hf_dir: Path, config_path: Path) -> ImportResult:
    """Write a run config (model from config.json, the family's native objective) starting from `hf_dir`."""
    cfg = read_hf_config(hf_dir)
    cfg.init_from = str(hf_dir.resolve())
    _, fresh = converted_state(cfg, hf_dir)  # checks every key now rather than at the first training step
    architectures = json.loads((hf_dir / "config.json").read_text()).get("architectures") or []
    objective = next((ARCHITECTURE_OBJECTIVES[a] for a in architectures if a in ARCHITECTURE_OBJECTIVES),
                     NATIVE[cfg.family])
    if OBJECTIVES[objective].model_head != cfg.head:  # e.g. an AlbertModel: no SOP head to continue
        objective = "mlm"
    if config_path.exists():
        raise UserError(f"{config_path} already exists; choose another --config path")
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(
        f"# Continued pretraining from {cfg.init_from} (written by `graft import`).\n"
        f"# Prepare data with its tokenizer: graft prepare INPUT --tokenizer {cfg.init_from} --out DATA\n"
        f"# then: graft train {config_path} data.path=DATA train.run_dir=RUN\n"
        + yaml.safe_dump({"objective": {"name": objective}, "model": asdict(cfg)}, sort_keys=False))
    return ImportResult(config_path=config_path, model=cfg, objective=objective, fresh=fresh)
