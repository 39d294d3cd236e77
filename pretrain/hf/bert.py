"""Explicit map between Graft's BertForMaskedLM and `transformers.BertForMaskedLM`: state-dict keys and
config.json. Imports torch only; export/import code loads the result with `transformers`.

Every key must be known and every expected key present: a silent mismatch would load a half-random model.
"""

import re

import torch

from pretrain.models.bert import BertConfig

# Graft key -> transformers key; "{}" is the layer index.
_TO_HF = {
    "embeddings.word.weight": "bert.embeddings.word_embeddings.weight",
    "embeddings.position.weight": "bert.embeddings.position_embeddings.weight",
    "embeddings.token_type.weight": "bert.embeddings.token_type_embeddings.weight",
    "embeddings.norm.weight": "bert.embeddings.LayerNorm.weight",
    "embeddings.norm.bias": "bert.embeddings.LayerNorm.bias",
    "layers.{}.attn.query.weight": "bert.encoder.layer.{}.attention.self.query.weight",
    "layers.{}.attn.query.bias": "bert.encoder.layer.{}.attention.self.query.bias",
    "layers.{}.attn.key.weight": "bert.encoder.layer.{}.attention.self.key.weight",
    "layers.{}.attn.key.bias": "bert.encoder.layer.{}.attention.self.key.bias",
    "layers.{}.attn.value.weight": "bert.encoder.layer.{}.attention.self.value.weight",
    "layers.{}.attn.value.bias": "bert.encoder.layer.{}.attention.self.value.bias",
    "layers.{}.attn.output.weight": "bert.encoder.layer.{}.attention.output.dense.weight",
    "layers.{}.attn.output.bias": "bert.encoder.layer.{}.attention.output.dense.bias",
    "layers.{}.attn_norm.weight": "bert.encoder.layer.{}.attention.output.LayerNorm.weight",
    "layers.{}.attn_norm.bias": "bert.encoder.layer.{}.attention.output.LayerNorm.bias",
    "layers.{}.ffn.up.weight": "bert.encoder.layer.{}.intermediate.dense.weight",
    "layers.{}.ffn.up.bias": "bert.encoder.layer.{}.intermediate.dense.bias",
    "layers.{}.ffn.down.weight": "bert.encoder.layer.{}.output.dense.weight",
    "layers.{}.ffn.down.bias": "bert.encoder.layer.{}.output.dense.bias",
    "layers.{}.ffn_norm.weight": "bert.encoder.layer.{}.output.LayerNorm.weight",
    "layers.{}.ffn_norm.bias": "bert.encoder.layer.{}.output.LayerNorm.bias",
    "head.dense.weight": "cls.predictions.transform.dense.weight",
    "head.dense.bias": "cls.predictions.transform.dense.bias",
    "head.norm.weight": "cls.predictions.transform.LayerNorm.weight",
    "head.norm.bias": "cls.predictions.transform.LayerNorm.bias",
    "head.bias": "cls.predictions.bias",
}
_FROM_HF = {hf: graft for graft, hf in _TO_HF.items()}

# Tied aliases (alias -> the key it shares storage with). Both models list them in state_dict(), so strict
# loading needs them; they are optional on input and must equal their source when present.
_GRAFT_TIED = {"head.decoder.weight": "embeddings.word.weight"}
_HF_TIED = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}

# In HF checkpoints but not in the MLM model, dropped as transformers drops them: buffers that older versions
# saved, and the pooler / NSP head of pretraining checkpoints such as bert-base-uncased.
_HF_IGNORED = re.compile(r"bert\.embeddings\.(position_ids|token_type_ids)|bert\.pooler\..+|cls\.seq_relationship\..+")

_LAYER_INDEX = re.compile(r"\.(\d+)\.")


def _convert(sd: dict, key_map: dict, tied: dict, ignored: re.Pattern | None, side: str) -> dict:
    out, n_layers = {}, 0
    for key, tensor in sd.items():
        if key in tied or (ignored is not None and ignored.fullmatch(key)):
            continue
        m = _LAYER_INDEX.search(key)
        template = f"{key[:m.start()]}.{{}}.{key[m.end():]}" if m else key
        if template not in key_map:
            raise KeyError(f"unknown {side} BERT key {key!r}")
        if m:
            n_layers = max(n_layers, int(m.group(1)) + 1)
        out[key_map[template].format(*m.groups() if m else ())] = tensor
    expected = [t.format(i) for t in key_map for i in (range(n_layers) if "{}" in t else [None])]
    missing = [k for k in expected if k not in sd]
    if missing:
        raise KeyError(f"{side} BERT state dict is missing {', '.join(missing)}")
    for alias, source in tied.items():
        if alias in sd and not (sd[alias] is sd[source] or torch.equal(sd[alias], sd[source])):
            raise ValueError(f"{side} {alias} differs from {source}; Graft's BERT ties them")
    return out


def to_hf(state_dict: dict) -> dict:
    """Graft BertForMaskedLM state dict -> transformers BertForMaskedLM state dict (tensors are not copied;
    the tied decoder keys alias their sources, so drop or clone them before safetensors.save_file)."""
    out = _convert(state_dict, _TO_HF, _GRAFT_TIED, None, "Graft")
    for alias, source in _HF_TIED.items():
        out[alias] = out[source]
    return out


def from_hf(state_dict: dict) -> dict:
    """transformers BertForMaskedLM state dict (with or without tied decoder keys) -> Graft state dict."""
    out = _convert(state_dict, _FROM_HF, _HF_TIED, _HF_IGNORED, "Hugging Face")
    for alias, source in _GRAFT_TIED.items():
        out[alias] = out[source]
    return out


# Graft BertConfig field -> transformers BertConfig field.
_CONFIG_TO_HF = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "hidden_dropout": "hidden_dropout_prob",
    "attention_dropout": "attention_probs_dropout_prob",
    "layer_norm_eps": "layer_norm_eps",
    "initializer_range": "initializer_range",
    "pad_token_id": "pad_token_id",
}
# Fixed by Graft's architecture: a config.json with another value describes a model Graft does not build.
_HF_FIXED = {
    "model_type": "bert",
    "hidden_act": "gelu",
    "position_embedding_type": "absolute",
    "tie_word_embeddings": True,
    "is_decoder": False,
    "add_cross_attention": False,
}


def to_hf_config(cfg: BertConfig) -> dict:
    """config.json fields for `transformers.BertConfig`."""
    return {"architectures": ["BertForMaskedLM"], **_HF_FIXED,
            **{hf: getattr(cfg, field) for field, hf in _CONFIG_TO_HF.items()}}


def from_hf_config(d: dict) -> BertConfig:
    """config.json dict -> BertConfig. Missing fields take the defaults, which equal transformers' defaults."""
    for key, value in _HF_FIXED.items():
        if d.get(key, value) != value:
            raise ValueError(f"config.json {key}={d[key]!r} is not supported: Graft's BERT needs {value!r}")
    return BertConfig(**{field: d[hf] for field, hf in _CONFIG_TO_HF.items() if hf in d})
