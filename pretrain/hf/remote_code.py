"""Exports that carry their own modeling code: models no `transformers` class computes (Transformer-XL
memory, relative XL positions) load with `trust_remote_code=True` in a Python without Graft.

The modeling code is Graft's own model files, copied flat into the export with their package imports made
relative (`from pretrain.models.x import` -> `from .graft_x import`), plus the glue in `pretrain/hf/remote/`.
Weights keep Graft's names under `model.`, so no key map is needed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from pretrain.models import (attention, bart, config, encoder, layers, memory, objective_heads, output, positions,
                             t5)
from pretrain.hf.common import require_close
from pretrain.models.config import ModelConfig
from pretrain.models.memory import MemoryCache

# What the glue imports, each module's own imports before it.
MODEL_MODULES = (config, positions, attention, layers, memory, output, objective_heads, encoder, t5, bart)
GLUE_DIR = Path(__file__).with_name("remote")
GLUE_FILES = ("configuration_graft.py", "modeling_graft.py")
PREFIX = "model."  # the wrapper holds Graft's model as `model`
_IMPORT = re.compile(r"^(\s*)from pretrain\.models\.(\w+) import", re.MULTILINE)
_OUTSIDE = re.compile(r"^\s*(from|import) (pretrain|data_pipeline|launch)\b", re.MULTILINE)


def needs_remote_code(cfg: ModelConfig) -> bool:
    """True for models that no `transformers` class computes."""
    return cfg.positions != "absolute" or cfg.recurrence.mem_len > 0


def write_code(out: Path) -> None:
    """The flat modeling package: Graft's model files and the glue."""
    for module in MODEL_MODULES:
        source = Path(module.__file__).read_text()
        flat = _IMPORT.sub(lambda m: f"{m.group(1)}from .graft_{m.group(2)} import", source)
        assert not _OUTSIDE.search(flat), f"{module.__name__} imports Graft code outside pretrain.models"
        (out / f"graft_{Path(module.__file__).stem}.py").write_text(flat)
    for name in GLUE_FILES:
        (out / name).write_text((GLUE_DIR / name).read_text())


def architecture(cfg: ModelConfig) -> str:
    return "GraftForSeq2SeqLM" if cfg.is_encoder_decoder else "GraftForMaskedLM"


def write_config(cfg: ModelConfig, out: Path, graft_config: dict) -> None:
    auto = "AutoModelForSeq2SeqLM" if cfg.is_encoder_decoder else "AutoModelForMaskedLM"
    config = {"architectures": [architecture(cfg)], "model_type": "graft", "graft": graft_config,
              "auto_map": {"AutoConfig": "configuration_graft.GraftConfig",
                           auto: f"modeling_graft.{architecture(cfg)}"},
              "pad_token_id": cfg.pad_token_id, "torch_dtype": "float32"}
    if cfg.is_encoder_decoder:
        config.update(is_encoder_decoder=True, decoder_start_token_id=cfg.decoder_start_token_id,
                      eos_token_id=cfg.eos_token_id)
    (out / "config.json").write_text(json.dumps(config, indent=2))


def verify_remote(out: Path, cfg: ModelConfig, model, max_abs_diff: float, segments: int = 3,
                  length: int = 16) -> float:
    """Load the export with `transformers` (its own code), run it and Graft's model (`model`, a meta-device
    skeleton, given the export's very tensors) over `segments` consecutive segments, memory carried; returns
    the largest logit difference, raising above `max_abs_diff`."""
    import transformers

    auto = transformers.AutoModelForSeq2SeqLM if cfg.is_encoder_decoder else transformers.AutoModelForMaskedLM
    hf = auto.from_pretrained(str(out), trust_remote_code=True).eval()
    state = {k.removeprefix(PREFIX): v for k, v in hf.state_dict().items()}
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    ids = torch.randint(0, cfg.vocab_size, (2, segments * length), generator=torch.Generator().manual_seed(0))
    ours_cache, theirs_memory, worst = MemoryCache(), None, 0.0
    with torch.no_grad():
        for s in range(segments):
            segment = ids[:, s * length:(s + 1) * length]
            batch = {"input_ids": segment, "attention_mask": torch.ones_like(segment)}
            if cfg.is_encoder_decoder:
                batch["decoder_input_ids"] = segment[:, :5]
            ours = model({**batch, "memory": ours_cache}).logits
            out_hf = hf(**batch, memory=theirs_memory)
            theirs_memory = out_hf.memory
            diff = (ours - out_hf.logits).abs().max().item()
            require_close(diff, max_abs_diff, "the exported model's logits", out, where=f" at segment {s + 1}")
            worst = max(worst, diff)
    return worst
