"""Graft's BART <-> `transformers.BartForConditionalGeneration`: keys and config.json."""

from __future__ import annotations

from pretrain.hf.common import HFPart, check_fixed, linear, pick, require_standard
from pretrain.models.config import ModelConfig

GRAFT_TIED = {"lm_head.weight": "shared.weight"}
CONFIG_FIELDS = {
    "vocab_size": "vocab_size", "hidden_size": "d_model", "num_layers": "encoder_layers",
    "num_decoder_layers": "decoder_layers", "num_heads": "encoder_attention_heads",
    "intermediate_size": "encoder_ffn_dim", "hidden_act": "activation_function",
    "max_position_embeddings": "max_position_embeddings", "hidden_dropout": "dropout",
    "attention_dropout": "attention_dropout", "initializer_range": "init_std", "pad_token_id": "pad_token_id",
    "bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id", "decoder_start_token_id": "decoder_start_token_id",
    "scale_embedding": "scale_embedding",
}
FIXED = {"activation_dropout": 0.0, "encoder_layerdrop": 0.0, "decoder_layerdrop": 0.0, "is_encoder_decoder": True}
LAYER_NORM_EPS = 1e-5  # hard-wired in transformers' BART
ATTN = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "output": "out_proj"}


def _stack(side: str, n: int, decoder: bool) -> dict[str, str]:
    hf = f"model.{side}"
    keys = {f"{side}.positions.weight": f"{hf}.embed_positions.weight"}
    keys.update(linear(f"{side}.embed_norm", f"{hf}.layernorm_embedding"))
    for i in range(n):
        g, h = f"{side}.stack.layers.{i}", f"{hf}.layers.{i}"
        for a, b in ATTN.items():
            keys.update(linear(f"{g}.attn.{a}", f"{h}.self_attn.{b}"))
            if decoder:
                keys.update(linear(f"{g}.cross_attn.{a}", f"{h}.encoder_attn.{b}"))
        keys.update(linear(f"{g}.attn_norm", f"{h}.self_attn_layer_norm"))
        if decoder:
            keys.update(linear(f"{g}.cross_norm", f"{h}.encoder_attn_layer_norm"))
        keys.update(linear(f"{g}.ffn.up", f"{h}.fc1"))
        keys.update(linear(f"{g}.ffn.down", f"{h}.fc2"))
        keys.update(linear(f"{g}.ffn_norm", f"{h}.final_layer_norm"))
    return keys


def parts(cfg: ModelConfig) -> list[HFPart]:
    require_standard(cfg, layer_norm_eps=LAYER_NORM_EPS)
    keys = {"shared.weight": "model.shared.weight", "final_logits_bias": "final_logits_bias"}
    keys.update(_stack("encoder", cfg.num_layers, decoder=False))
    keys.update(_stack("decoder", cfg.decoder_layers, decoder=True))
    config = {"model_type": "bart", **FIXED, "tie_word_embeddings": True,
              **{h: getattr(cfg, g) for g, h in CONFIG_FIELDS.items()},
              "decoder_layers": cfg.decoder_layers, "decoder_attention_heads": cfg.num_heads,
              "decoder_ffn_dim": cfg.intermediate_size, "forced_eos_token_id": cfg.eos_token_id}
    return [HFPart(
        subdir="", architecture="BartForConditionalGeneration", config=config, keys=keys, base_prefix="model.",
        head=("final_logits_bias",),
        hf_tied={"model.encoder.embed_tokens.weight": "model.shared.weight",
                 "model.decoder.embed_tokens.weight": "model.shared.weight", "lm_head.weight": "model.shared.weight"},
    )]


def from_hf_config(d: dict, generator: dict | None = None) -> ModelConfig:
    check_fixed(d, FIXED, "BART")
    for enc, dec in (("encoder_attention_heads", "decoder_attention_heads"), ("encoder_ffn_dim", "decoder_ffn_dim")):
        if d.get(enc) != d.get(dec):
            raise ValueError(f"config.json {enc}={d.get(enc)} differs from {dec}={d.get(dec)}; Graft's BART "
                             "uses one value for both")
    kwargs = pick(d, CONFIG_FIELDS, {"attention_dropout": 0.0, "pad_token_id": 1, "bos_token_id": 0,
                                     "eos_token_id": 2, "decoder_start_token_id": 2})
    return ModelConfig(family="bart", layer_norm_eps=LAYER_NORM_EPS, **kwargs)
