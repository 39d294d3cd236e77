"""Graft's ALBERT <-> `transformers.AlbertForMaskedLM` / `AlbertForPreTraining`: keys and config.json.

The standard ALBERT shares one layer across the depth (num_hidden_groups = inner_group_num = 1).
"""

from __future__ import annotations

from pretrain.hf.bert import CONFIG_FIELDS, mlm_head
from pretrain.hf.common import HFPart, check_fixed, embeddings, linear, pick, require_standard
from pretrain.models.config import ModelConfig

GRAFT_TIED = {"head.decoder.weight": "embeddings.word.weight"}
FIXED = {"num_hidden_groups": 1, "inner_group_num": 1, "position_embedding_type": "absolute"}
LAYER = "albert.encoder.albert_layer_groups.0.albert_layers.0"


def parts(cfg: ModelConfig) -> list[HFPart]:
    require_standard(cfg, share_layers=True)
    keys = embeddings("embeddings", "albert.embeddings")
    keys.update(linear("encoder.project", "albert.encoder.embedding_hidden_mapping_in"))
    names = {"attn.query": "attention.query", "attn.key": "attention.key", "attn.value": "attention.value",
             "attn.output": "attention.dense", "attn_norm": "attention.LayerNorm", "ffn.up": "ffn",
             "ffn.down": "ffn_output", "ffn_norm": "full_layer_layer_norm"}
    for g, h in names.items():
        keys.update(linear(f"encoder.stack.layers.0.{g}", f"{LAYER}.{h}"))
    keys.update(mlm_head("predictions.dense", "predictions.LayerNorm", "predictions.bias"))
    pretraining = cfg.head == "pretraining"
    if pretraining:
        keys.update(linear("pair_head.pooler", "albert.pooler"))
        keys.update(linear("pair_head.classifier", "sop_classifier.classifier"))
    config = {"model_type": "albert", **FIXED, "tie_word_embeddings": True, "embedding_size": cfg.embed_size,
              **{h: getattr(cfg, g) for g, h in CONFIG_FIELDS.items()}}
    if cfg.embed_size == cfg.hidden_size:
        raise ValueError("ALBERT always projects its embeddings; set model.embedding_size below hidden_size")
    return [HFPart(
        subdir="", architecture="AlbertForPreTraining" if pretraining else "AlbertForMaskedLM", config=config,
        keys=keys, base_prefix="albert.", head=("predictions.", "sop_classifier.", "albert.pooler."),
        hf_tied={"predictions.decoder.weight": "albert.embeddings.word_embeddings.weight",
                 "predictions.decoder.bias": "predictions.bias"},
        hf_ignored=r"albert\.embeddings\.(position_ids|token_type_ids)" +
                   ("" if pretraining else r"|albert\.pooler\..+|sop_classifier\..+"),
        outputs={"logits": "prediction_logits", "pair_logits": "sop_logits"} if pretraining else {"logits": "logits"},
    )]


def from_hf_config(d: dict, generator: dict | None = None) -> ModelConfig:
    check_fixed(d, FIXED, "ALBERT")
    head = "pretraining" if "AlbertForPreTraining" in (d.get("architectures") or []) else "mlm"
    return ModelConfig(family="albert", head=head, share_layers=True, embedding_size=d.get("embedding_size", 128),
                       **pick(d, CONFIG_FIELDS, {"hidden_act": "gelu_new", "hidden_dropout": 0.0,
                                                 "attention_dropout": 0.0}))
