"""Graft's T5 v1.1 <-> `transformers.T5ForConditionalGeneration` (feed_forward_proj "gated-gelu")."""

from __future__ import annotations

from pretrain.hf.common import HFPart, check_fixed, pick, require_standard
from pretrain.models.config import ModelConfig

GRAFT_TIED = {"lm_head.weight": "shared.weight"}
CONFIG_FIELDS = {
    "vocab_size": "vocab_size", "hidden_size": "d_model", "head_dim": "d_kv", "intermediate_size": "d_ff",
    "num_layers": "num_layers", "num_decoder_layers": "num_decoder_layers", "num_heads": "num_heads",
    "relative_attention_num_buckets": "relative_attention_num_buckets",
    "relative_attention_max_distance": "relative_attention_max_distance", "hidden_dropout": "dropout_rate",
    "layer_norm_eps": "layer_norm_epsilon", "pad_token_id": "pad_token_id", "eos_token_id": "eos_token_id",
    "decoder_start_token_id": "decoder_start_token_id",
}
# tie_word_embeddings=False is T5 v1.1's marker: transformers then skips the d_model**-0.5 output scaling.
FIXED = {"feed_forward_proj": "gated-gelu", "is_encoder_decoder": True, "tie_word_embeddings": False}
ATTN = {"query": "q", "key": "k", "value": "v", "output": "o"}


def _stack(side: str, n: int, decoder: bool) -> dict[str, str]:
    keys = {f"{side}.position_bias.bias.weight": f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            f"{side}.final_norm.weight": f"{side}.final_layer_norm.weight"}
    ffn = 2 if decoder else 1
    for i in range(n):
        g, h = f"{side}.stack.layers.{i}", f"{side}.block.{i}.layer"
        keys.update({f"{g}.attn.{a}.weight": f"{h}.0.SelfAttention.{b}.weight" for a, b in ATTN.items()})
        keys[f"{g}.attn_norm.weight"] = f"{h}.0.layer_norm.weight"
        if decoder:
            keys.update({f"{g}.cross_attn.{a}.weight": f"{h}.1.EncDecAttention.{b}.weight" for a, b in ATTN.items()})
            keys[f"{g}.cross_norm.weight"] = f"{h}.1.layer_norm.weight"
        keys.update({f"{g}.ffn.{a}.weight": f"{h}.{ffn}.DenseReluDense.{b}.weight"
                     for a, b in {"gate": "wi_0", "up": "wi_1", "down": "wo"}.items()})
        keys[f"{g}.ffn_norm.weight"] = f"{h}.{ffn}.layer_norm.weight"
    return keys


def parts(cfg: ModelConfig) -> list[HFPart]:
    require_standard(cfg, hidden_act="gelu_new")
    if cfg.hidden_dropout != cfg.attention_dropout:
        raise ValueError("T5 has one dropout_rate: set model.attention_dropout equal to model.hidden_dropout")
    keys = {"shared.weight": "shared.weight"}
    keys.update(_stack("encoder", cfg.num_layers, decoder=False))
    keys.update(_stack("decoder", cfg.decoder_layers, decoder=True))
    config = {"model_type": "t5", **FIXED, "d_kv": cfg.hidden_size // cfg.num_heads,
              **{h: getattr(cfg, g) for g, h in CONFIG_FIELDS.items() if getattr(cfg, g) is not None},
              "num_decoder_layers": cfg.decoder_layers, "initializer_factor": 1.0}
    return [HFPart(
        subdir="", architecture="T5ForConditionalGeneration", config=config, keys=keys, base_prefix="",
        hf_tied={"encoder.embed_tokens.weight": "shared.weight", "decoder.embed_tokens.weight": "shared.weight",
                 "lm_head.weight": "shared.weight"},
    )]


def from_hf_config(d: dict, generator: dict | None = None) -> ModelConfig:
    check_fixed(d, {k: v for k, v in FIXED.items() if k != "tie_word_embeddings"}, "T5")
    # Saved by transformers 5: scale_decoder_outputs; by earlier versions: tie_word_embeddings=false for v1.1.
    scaled = d["scale_decoder_outputs"] if "scale_decoder_outputs" in d else d.get("tie_word_embeddings", True)
    if scaled:
        raise ValueError("config.json describes original T5 (decoder output scaled by d_model**-0.5); Graft "
                         "builds T5 v1.1, whose config.json has tie_word_embeddings=false")
    kwargs = pick(d, CONFIG_FIELDS, {"hidden_dropout": 0.1, "layer_norm_eps": 1e-6, "eos_token_id": 1})
    kwargs.setdefault("decoder_start_token_id", kwargs.get("pad_token_id", 0))
    return ModelConfig(family="t5", hidden_act="gelu_new", attention_dropout=kwargs["hidden_dropout"],
                       initializer_range=1.0, **kwargs)
