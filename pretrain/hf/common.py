"""What every family's key map provides, and the helpers they share.

A family maps Graft's model to one or more `transformers` models ("parts": ELECTRA has two). Each part
lists every tensor explicitly: a silent mismatch would load a half-random model, so unknown and missing
keys are errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pretrain.models.config import ModelConfig


@dataclass
class HFPart:
    subdir: str  # "" for the main model; ELECTRA's generator goes to "generator"
    architecture: str  # the transformers class, e.g. "BertForMaskedLM"
    config: dict  # config.json fields
    keys: dict[str, str]  # Graft key -> HF key, every tensor the part's file holds
    base_prefix: str  # prefix of the base model's keys ("bert."); base-model checkpoints are saved without it
    head: tuple[str, ...] = ()  # HF key prefixes of the pretraining head, which base-model checkpoints lack
    hf_tied: dict[str, str] = field(default_factory=dict)  # HF alias -> source: not written, re-tied on load
    hf_ignored: str = r"$^"  # regex of HF keys dropped on import (old buffers, heads Graft does not build)
    inputs: dict = field(default_factory=dict)  # extra batch entries that make Graft's model compute this part
    # ModelOutput field -> the name of the same output in transformers' output of this part
    outputs: dict[str, str] = field(default_factory=lambda: {"logits": "logits"})


class NotExportable(ValueError):
    """The config has no `transformers` equivalent (e.g. pre-LN BERT)."""


def require_standard(cfg: ModelConfig, **standard) -> None:
    """Options beyond the standard architecture have no transformers class to export to."""
    standard = {"pre_ln": False, **standard}
    for name, value in standard.items():
        if getattr(cfg, name) != value:
            raise NotExportable(f"model.{name}={getattr(cfg, name)!r} has no transformers {cfg.family} "
                                f"equivalent (it needs {value!r}); such a model trains but cannot be exported")


def bert_layers(graft: str, hf: str, n: int) -> dict[str, str]:
    """The encoder layers of BERT, RoBERTa and ELECTRA: Graft `{graft}.stack.layers.i` -> HF `{hf}.layer.i`."""
    names = {"attn.query": "attention.self.query", "attn.key": "attention.self.key",
             "attn.value": "attention.self.value", "attn.output": "attention.output.dense",
             "attn_norm": "attention.output.LayerNorm", "ffn.up": "intermediate.dense",
             "ffn.down": "output.dense", "ffn_norm": "output.LayerNorm"}
    return {f"{graft}.stack.layers.{i}.{g}.{p}": f"{hf}.layer.{i}.{h}.{p}"
            for i in range(n) for g, h in names.items() for p in ("weight", "bias")}


def embeddings(graft: str, hf: str) -> dict[str, str]:
    names = {"word": "word_embeddings", "position": "position_embeddings", "token_type": "token_type_embeddings"}
    out = {f"{graft}.{g}.weight": f"{hf}.{h}.weight" for g, h in names.items()}
    out.update({f"{graft}.norm.{p}": f"{hf}.LayerNorm.{p}" for p in ("weight", "bias")})
    return out


def linear(graft: str, hf: str, bias: bool = True) -> dict[str, str]:
    return {f"{graft}.{p}": f"{hf}.{p}" for p in (("weight", "bias") if bias else ("weight",))}


def pick(d: dict, mapping: dict[str, str], defaults: dict | None = None) -> dict:
    """HF config dict -> Graft ModelConfig kwargs for the fields present (mapping: Graft field -> HF field)."""
    out = dict(defaults or {})
    out.update({g: d[h] for g, h in mapping.items() if h in d and d[h] is not None})
    return out


def check_fixed(d: dict, fixed: dict, family: str) -> None:
    for key, value in fixed.items():
        if key in d and d[key] != value:
            raise ValueError(f"config.json {key}={d[key]!r} is not supported: Graft's {family} needs {value!r}")


def require_close(diff: float, limit: float, what: str, out, where: str = "") -> None:
    """Export's check: `what` (of the written model) must be within `limit` of Graft's, else the export fails
    and its staging directory `out` is kept for inspection."""
    if not diff <= limit:
        raise RuntimeError(f"export check failed: {what} differ from Graft's by {diff:.3g}{where} (limit {limit}); "
                           f"the staging directory {out} is kept for inspection")
