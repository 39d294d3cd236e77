"""Every preset in configs/models loads, fits its objective, builds (on the meta device) and maps to transformers."""

from pathlib import Path

import pytest
import torch

from pretrain.config import load_config
from pretrain.hf.convert import parts
from pretrain.models import build_model

PRESETS = sorted((Path(__file__).resolve().parents[2] / "configs" / "models").glob("*.yaml"))
# t5-base: 223M, not v1.1's 248M, because transformers 5 ties T5's LM head to the embedding (see pretrain/models/t5.py).
SIZES = {"bert-base": 110e6, "bert-large": 335e6, "roberta-base": 125e6, "t5-base": 223e6, "bart-base": 140e6}


def test_every_family_has_tiny_base_and_large():
    names = {p.stem for p in PRESETS}
    for family in ("bert", "roberta", "albert", "electra", "t5", "bart"):
        assert {f"{family}-tiny", f"{family}-base", f"{family}-large"} <= names


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_builds_and_exports(preset):
    vocab = 32100 if preset.stem.startswith("t5") else 50265 if preset.stem.split("-")[0] in ("roberta", "bart") \
        else 30522
    cfg = load_config(preset, ["data.path=unused", "train.run_dir=unused", f"model.vocab_size={vocab}"])
    with torch.device("meta"):
        model = build_model(cfg.model)
    n = sum(p.numel() for p in model.parameters())
    if preset.stem in SIZES:  # the published sizes of the standard models (within 5%)
        assert abs(n - SIZES[preset.stem]) / SIZES[preset.stem] < 0.05, n
    keys = {k for part in parts(cfg.model) for k in part.keys}
    assert keys == set(model.state_dict()) - {"head.decoder.weight", "generator_head.decoder.weight",
                                              "lm_head.weight"}
