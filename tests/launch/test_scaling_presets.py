"""The size ladders in configs/scaling/: every stated non-embedding count is the built model's, and the
ladders span ~1M to ~1B for every family."""

import pytest

from launch.model_size import count_parameters
from launch.sweep_plan import load_ladders
from pretrain.models.config import FAMILIES, ModelConfig

SPECIAL = {"roberta": {"pad_token_id": 1}, "t5": {"decoder_start_token_id": 0}, "bart": {"decoder_start_token_id": 2}}


def _config(preset: dict, vocab_size: int) -> ModelConfig:
    return ModelConfig(family=preset["family"], vocab_size=vocab_size, **SPECIAL.get(preset["family"], {}),
                       **preset["model"])


@pytest.mark.parametrize("name", sorted(load_ladders()))
def test_stated_non_embedding_count_is_the_models(name):
    preset = load_ladders()[name]
    assert count_parameters(_config(preset, 8192)).non_embedding == preset["non_embedding_params"], name


@pytest.mark.parametrize("name", ["bert-1m", "t5-1m", "albert-1m", "electra-1m"])
def test_non_embedding_count_does_not_depend_on_the_vocabulary(name):
    preset = load_ladders()[name]
    small, large = count_parameters(_config(preset, 8192)), count_parameters(_config(preset, 32000))
    assert small.non_embedding == large.non_embedding and small.total < large.total


def test_every_family_has_a_ladder_from_about_1m_to_about_1b():
    presets = load_ladders()
    for family in FAMILIES:
        counts = sorted(p["non_embedding_params"] for p in presets.values() if p["family"] == family)
        assert counts, family
        big = max(counts)
        assert 0.7e9 <= big <= 1.5e9, (family, big)
        assert any(0.7e6 <= c <= 1.5e6 for c in counts), (family, counts)


def test_count_matches_a_real_build():
    """The meta-device count equals that of a model built with real tensors (small preset)."""
    import torch

    from pretrain.models import build_model

    cfg = _config(load_ladders()["bert-30k"], 500)
    model = build_model(cfg, pretrained=False)
    vocab_sized = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    expected = sum(p.numel() for p in model.parameters() if id(p) not in vocab_sized and p.shape[0] != 500)
    assert count_parameters(cfg).non_embedding == expected
    assert count_parameters(cfg).total == sum(p.numel() for p in model.parameters())
