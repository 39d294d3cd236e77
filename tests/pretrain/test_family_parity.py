"""Every family against real (tiny, random) transformers models, in both directions, fp32, default tolerances."""

import pytest
import torch
import transformers

from family_models import compare, graft_configs, hf_models, inputs, perturb
from pretrain.hf import FAMILY_MAPS
from pretrain.hf.convert import from_hf, parts, to_hf
from pretrain.models import build_model

CASES = list(graft_configs())


@pytest.mark.parametrize("case", CASES)
def test_import_direction_outputs_match(case):
    torch.manual_seed(0)
    hf = [m.eval() for m in hf_models()[case]]
    for m in hf:
        perturb(m)
    if len(hf) > 1:  # ELECTRA's generator and discriminator share their embeddings
        hf[1].electra.embeddings.load_state_dict(hf[0].electra.embeddings.state_dict())
    family = graft_configs()[case].family
    generator = hf[1].config.to_dict() if len(hf) > 1 else None
    cfg = FAMILY_MAPS[family].from_hf_config({**hf[0].config.to_dict(), "architectures": [type(hf[0]).__name__]},
                                             generator)
    model = build_model(cfg).eval()
    state, fresh = from_hf([m.state_dict() for m in hf], cfg)
    assert fresh == []
    model.load_state_dict(state, strict=True)
    for i, m in enumerate(hf):
        compare(model, m, inputs(cfg.pad_token_id, cfg.is_encoder_decoder), i)


@pytest.mark.parametrize("case", CASES)
def test_export_direction_outputs_match(case):
    cfg = graft_configs()[case]
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    perturb(model)
    for i, (part, sd) in enumerate(to_hf(model.state_dict(), cfg)):
        hf = getattr(transformers, part.architecture)(transformers.AutoConfig.for_model(**part.config)).eval()
        result = hf.load_state_dict(sd, strict=False)
        assert result.unexpected_keys == []
        assert set(result.missing_keys) <= set(part.hf_tied)  # aliases transformers ties itself
        hf.tie_weights()
        compare(model, hf, inputs(cfg.pad_token_id, cfg.is_encoder_decoder), i)


@pytest.mark.parametrize("case", CASES)
def test_config_round_trip(case):
    cfg = graft_configs()[case]
    main = parts(cfg)
    generator = main[1].config if len(main) > 1 else None
    back = FAMILY_MAPS[cfg.family].from_hf_config({**main[0].config, "architectures": [main[0].architecture]},
                                                  generator)
    for field in ("family", "vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                  "head", "embed_size", "decoder_layers", "pad_token_id", "hidden_act"):
        assert getattr(back, field) == getattr(cfg, field), field


@pytest.mark.parametrize("family", ["bert", "roberta", "albert", "electra"])
def test_hidden_act_reaches_the_same_places_as_in_transformers(family):
    """Each head follows hidden_act exactly where its transformers class does (RoBERTa's LM head: never)."""
    cfg = graft_configs()[family]
    cfg.hidden_act = "relu"
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    perturb(model)
    for i, (part, sd) in enumerate(to_hf(model.state_dict(), cfg)):
        hf = getattr(transformers, part.architecture)(transformers.AutoConfig.for_model(**part.config)).eval()
        hf.load_state_dict(sd, strict=False)
        hf.tie_weights()
        compare(model, hf, inputs(cfg.pad_token_id, False), i)


def test_base_model_import_starts_the_head_fresh():
    torch.manual_seed(0)
    base = transformers.BertModel(transformers.BertConfig(**hf_models.__globals__["BERT_LIKE"]),
                                  add_pooling_layer=False)
    cfg = graft_configs()["bert"]
    state, fresh = from_hf([base.state_dict()], cfg)
    assert sorted(fresh) == sorted(k for k in parts(cfg)[0].keys if k.startswith("head."))
    model = build_model(cfg)
    missing = model.load_state_dict(state, strict=False).missing_keys
    assert sorted(missing) == sorted(fresh)
    torch.testing.assert_close(model.embeddings.word.weight, base.embeddings.word_embeddings.weight)


def test_key_map_errors_name_the_key():
    cfg = graft_configs()["bert"]
    sd = to_hf(build_model(cfg).state_dict(), cfg)[0][1]
    missing = "bert.encoder.layer.1.attention.self.key.bias"
    with pytest.raises(KeyError, match=missing.replace(".", r"\.")):
        from_hf([{k: v for k, v in sd.items() if k != missing}], cfg)
    with pytest.raises(KeyError, match=r"bert\.encoder\.layer\.0\.attention\.self\.rotary"):
        from_hf([{**sd, "bert.encoder.layer.0.attention.self.rotary": torch.zeros(1)}], cfg)
    with pytest.raises(KeyError, match=r"head\.extra"):
        to_hf({**build_model(cfg).state_dict(), "head.extra": torch.zeros(1)}, cfg)
    with pytest.raises(ValueError, match=r"cls\.predictions\.decoder\.weight"):
        decoder = torch.zeros_like(sd["bert.embeddings.word_embeddings.weight"])
        from_hf([{**sd, "cls.predictions.decoder.weight": decoder,
                  "bert.embeddings.word_embeddings.weight": sd["bert.embeddings.word_embeddings.weight"]}], cfg)


def test_non_standard_options_refuse_to_export():
    from pretrain.hf.common import NotExportable

    cfg = graft_configs()["bert"]
    cfg.pre_ln = True
    with pytest.raises(NotExportable, match="pre_ln"):
        parts(cfg)
