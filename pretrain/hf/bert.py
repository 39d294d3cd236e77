"""Graft's BERT <-> `transformers.BertForMaskedLM` / `BertForPreTraining`: keys and config.json."""

from __future__ import annotations

from pretrain.hf.common import HFPart, bert_layers, check_fixed, embeddings, linear, pick, require_standard
from pretrain.models.config import ModelConfig

GRAFT_TIED = {"head.decoder.weight": "embeddings.word.weight"}
# Graft field -> transformers field, shared by the BERT-like configs (BERT, RoBERTa, ELECTRA).
CONFIG_FIELDS = {
    "vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads", "intermediate_size": "intermediate_size", "hidden_act": "hidden_act",
    "max_position_embeddings": "max_position_embeddings", "type_vocab_size": "type_vocab_size",
    "hidden_dropout": "hidden_dropout_prob", "attention_dropout": "attention_probs_dropout_prob",
    "layer_norm_eps": "layer_norm_eps", "initializer_range": "initializer_range", "pad_token_id": "pad_token_id",
}
FIXED = {"position_embedding_type": "absolute", "is_decoder": False, "add_cross_attention": False}


def mlm_head(dense: str, norm: str, bias: str) -> dict[str, str]:
    """Graft's MLMHead ("head.*") -> the HF names of its dense layer, norm and output bias."""
    out = linear("head.dense", dense)
    out.update(linear("head.norm", norm))
    out["head.bias"] = bias
    return out


def parts(cfg: ModelConfig) -> list[HFPart]:
    require_standard(cfg, embedding_size=None, share_layers=False)
    keys = embeddings("embeddings", "bert.embeddings")
    keys.update(bert_layers("encoder", "bert.encoder", cfg.num_layers))
    keys.update(mlm_head("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
                         "cls.predictions.bias"))
    pretraining = cfg.head == "pretraining"
    if pretraining:
        keys.update(linear("pair_head.pooler", "bert.pooler.dense"))
        keys.update(linear("pair_head.classifier", "cls.seq_relationship"))
    config = {"model_type": "bert", **FIXED, "tie_word_embeddings": True,
              **{h: getattr(cfg, g) for g, h in CONFIG_FIELDS.items()}}
    return [HFPart(
        subdir="", architecture="BertForPreTraining" if pretraining else "BertForMaskedLM", config=config,
        keys=keys, base_prefix="bert.", head=("cls.", "bert.pooler."),
        hf_tied={"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
                 "cls.predictions.decoder.bias": "cls.predictions.bias"},
        hf_ignored=r"bert\.embeddings\.(position_ids|token_type_ids)" +
                   ("" if pretraining else r"|bert\.pooler\..+|cls\.seq_relationship\..+"),
        outputs={"logits": "prediction_logits", "pair_logits": "seq_relationship_logits"} if pretraining
        else {"logits": "logits"},
    )]


def from_hf_config(d: dict, generator: dict | None = None) -> ModelConfig:
    check_fixed(d, FIXED, "BERT")
    head = "pretraining" if "BertForPreTraining" in (d.get("architectures") or []) else "mlm"
    return ModelConfig(family="bert", head=head, **pick(d, CONFIG_FIELDS))
