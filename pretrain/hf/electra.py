"""Graft's ELECTRA <-> `transformers.ElectraForPreTraining` (the discriminator, OUT_DIR) and
`ElectraForMaskedLM` (the generator, OUT_DIR/generator). Both carry a copy of the shared embeddings."""

from __future__ import annotations

from pretrain.hf.bert import CONFIG_FIELDS, FIXED, mlm_head
from pretrain.hf.common import HFPart, bert_layers, check_fixed, embeddings, linear, pick, require_standard
from pretrain.models.config import ModelConfig

GRAFT_TIED = {"generator_head.decoder.weight": "embeddings.word.weight"}
GENERATOR_DIR = "generator"
IGNORED = r"electra\.embeddings\.(position_ids|token_type_ids)"


def _encoder(cfg: ModelConfig, graft: str) -> dict[str, str]:
    keys = embeddings("embeddings", "electra.embeddings")
    if cfg.embed_size != cfg.hidden_size:
        keys.update(linear(f"{graft}.project", "electra.embeddings_project"))
    keys.update(bert_layers(graft, "electra.encoder", cfg.num_layers))
    return keys


def _config(cfg: ModelConfig) -> dict:
    return {"model_type": "electra", **FIXED, "tie_word_embeddings": True, "embedding_size": cfg.embed_size,
            **{h: getattr(cfg, g) for g, h in CONFIG_FIELDS.items()}}


def parts(cfg: ModelConfig) -> list[HFPart]:
    require_standard(cfg, share_layers=False)
    gen = cfg.generator
    disc_keys = _encoder(cfg, "discriminator")
    disc_keys.update(linear("discriminator_head.dense", "discriminator_predictions.dense"))
    disc_keys.update(linear("discriminator_head.prediction", "discriminator_predictions.dense_prediction"))
    gen_keys = _encoder(gen, "generator")
    gen_keys.update({g.replace("head.", "generator_head.", 1): h for g, h in
                     mlm_head("generator_predictions.dense", "generator_predictions.LayerNorm",
                              "generator_lm_head.bias").items()})
    return [
        HFPart(subdir="", architecture="ElectraForPreTraining", config=_config(cfg), keys=disc_keys,
               base_prefix="electra.", head=("discriminator_predictions.",), hf_ignored=IGNORED),
        HFPart(subdir=GENERATOR_DIR, architecture="ElectraForMaskedLM", config=_config(gen), keys=gen_keys,
               base_prefix="electra.", head=("generator_predictions.", "generator_lm_head."),
               hf_tied={"generator_lm_head.weight": "electra.embeddings.word_embeddings.weight"},
               hf_ignored=IGNORED),
    ]


def from_hf_config(d: dict, generator: dict | None = None) -> ModelConfig:
    """The discriminator's config.json, and the generator's when there is one (else a quarter-size generator)."""
    check_fixed(d, FIXED, "ELECTRA")
    kwargs = pick(d, CONFIG_FIELDS)
    if generator is not None:
        kwargs.update(generator_hidden_size=generator["hidden_size"],
                      generator_num_heads=generator["num_attention_heads"],
                      generator_intermediate_size=generator["intermediate_size"],
                      generator_num_layers=generator["num_hidden_layers"])
    return ModelConfig(family="electra", embedding_size=d.get("embedding_size", 128), **kwargs)
