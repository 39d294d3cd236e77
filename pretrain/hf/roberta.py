"""Graft's RoBERTa <-> `transformers.RobertaForMaskedLM`: keys and config.json."""

from __future__ import annotations

from pretrain.hf.bert import CONFIG_FIELDS, FIXED, mlm_head
from pretrain.hf.common import HFPart, bert_layers, check_fixed, embeddings, pick, require_standard
from pretrain.models.config import ModelConfig

GRAFT_TIED = {"head.decoder.weight": "embeddings.word.weight"}


def parts(cfg: ModelConfig) -> list[HFPart]:
    require_standard(cfg, embedding_size=None, share_layers=False)
    keys = embeddings("embeddings", "roberta.embeddings")
    keys.update(bert_layers("encoder", "roberta.encoder", cfg.num_layers))
    keys.update(mlm_head("lm_head.dense", "lm_head.layer_norm", "lm_head.bias"))
    config = {"model_type": "roberta", **FIXED, "tie_word_embeddings": True,
              "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
              **{h: getattr(cfg, g) for g, h in CONFIG_FIELDS.items()}}
    return [HFPart(
        subdir="", architecture="RobertaForMaskedLM", config=config, keys=keys, base_prefix="roberta.",
        head=("lm_head.",),
        hf_tied={"lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
                 "lm_head.decoder.bias": "lm_head.bias"},
        hf_ignored=r"roberta\.embeddings\.(position_ids|token_type_ids)|roberta\.pooler\..+",
    )]


def from_hf_config(d: dict, generator: dict | None = None) -> ModelConfig:
    check_fixed(d, FIXED, "RoBERTa")
    return ModelConfig(family="roberta", **pick(d, {**CONFIG_FIELDS, "bos_token_id": "bos_token_id",
                                                     "eos_token_id": "eos_token_id"}))
