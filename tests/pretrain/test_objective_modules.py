"""Objectives as modules: each is found by objective.name, declares what it needs, and the families it trains
follow from the models' capabilities."""

import importlib

import pytest

from data_pipeline.errors import UserError
from pretrain.config import load_config
from pretrain.models.config import ModelConfig
from pretrain.objectives import MODULES, OBJECTIVES, ObjectiveConfig, check_fits, trained_families
from pretrain.objectives.base import Objective

# What each objective trained before the objectives became modules (the registry's family lists then), and the
# objectives added since.
TRAINS = {"mlm": ["bert", "roberta", "albert"], "mlm_nsp": ["bert"], "mlm_sop": ["albert"], "rtd": ["electra"],
          "span_corruption": ["t5"], "text_infilling": ["bart"],
          "masked_lm": ["bert", "roberta", "albert"], "prefix_lm": ["t5"], "bart_noise": ["bart"],
          "tlm": ["bert", "albert"], "unilm": ["bert", "albert"], "structbert": ["bert", "albert"],
          "mlm_contrastive": ["bert", "roberta", "albert"], "multilingual_mlm": ["bert", "albert"],
          "mass": ["t5", "bart"], "permuted_lm": ["bert", "roberta", "albert"]}


def test_one_module_per_objective_each_named_after_it():
    assert sorted(OBJECTIVES) == sorted(TRAINS)
    for module in MODULES:
        assert isinstance(module.OBJECTIVE, Objective)
        assert module.__name__ == f"pretrain.objectives.{module.OBJECTIVE.name}"
        assert importlib.import_module(module.__name__) is module


@pytest.mark.parametrize("name", sorted(TRAINS))
def test_the_families_an_objective_trains_follow_from_capabilities(name):
    assert trained_families(OBJECTIVES[name]) == TRAINS[name]


def test_a_family_without_the_capabilities_is_refused_naming_what_it_trains():
    with pytest.raises(UserError, match="span_corruption does not train model.family=bert .it trains t5.; "
                                        "bert's native objective is mlm"):
        check_fits(ObjectiveConfig(name="span_corruption"), ModelConfig(family="bert"))
    with pytest.raises(UserError, match="needs model.head=pretraining, got mlm"):
        check_fits(ObjectiveConfig(name="mlm_nsp"), ModelConfig(family="bert"))


def test_unknown_objective_and_unknown_option_are_errors_naming_them():
    with pytest.raises(UserError, match="objective.name 'nope' is not known"):
        load_config(None, ["objective.name=nope", "train.run_dir=x", "data.path=y", "model.vocab_size=99"])
    with pytest.raises(UserError, match="objective.span.nope"):
        load_config(None, ["objective.span.nope=1", "train.run_dir=x", "data.path=y", "model.vocab_size=99"])


@pytest.mark.parametrize("block", ["masking", "bart", "unilm", "structbert", "contrastive"])
def test_the_new_objectives_blocks_refuse_unknown_options_naming_them(block):
    with pytest.raises(UserError, match=f"objective.{block}.nope"):
        load_config(None, [f"objective.{block}.nope=1", "train.run_dir=x", "data.path=y", "model.vocab_size=99"])


def test_bart_noise_preset_is_barts_released_recipe():
    from conftest import REPO_ROOT

    cfg = load_config(REPO_ROOT / "configs" / "objectives" / "bart_noise.yaml",
                      ["train.run_dir=x", "data.path=y", "model.vocab_size=99"])
    bart = cfg.objective.bart
    assert (bart.mask_ratio, bart.random_ratio, bart.poisson_lambda, bart.permute_ratio, bart.replace_length) == (
        0.3, 0.1, 3.5, 1.0, 1)


def test_sbo_adds_its_pretraining_only_head_and_term():
    from pretrain.models import build_model
    from pretrain.objectives import objective_heads
    from pretrain.objectives.heads import SpanBoundaryHead
    from pretrain.objectives.losses import mlm_loss

    cfg = ObjectiveConfig(name="masked_lm")
    assert objective_heads(cfg)(None) == {} and OBJECTIVES["masked_lm"].loss(cfg) is mlm_loss
    cfg.masking.unit, cfg.masking.sbo, cfg.masking.sbo_weight = "span", True, 0.5
    model = build_model(ModelConfig(vocab_size=99, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=8))
    heads = objective_heads(cfg)(model)
    assert isinstance(heads["sbo"], SpanBoundaryHead) and OBJECTIVES["masked_lm"].loss(cfg).keywords == {
        "sbo_weight": 0.5}
    with pytest.raises(UserError, match="objective.masking.sbo needs unit: span"):
        load_config(None, ["objective.masking.sbo=true", "train.run_dir=x", "data.path=y", "model.vocab_size=99"])
