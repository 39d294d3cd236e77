"""Training FLOPs per step, for MFU. The formula (also in README.md, "Observability"):

Every matrix multiply of m x k by k x n costs 2mkn FLOPs forward and twice that backward, so a dense layer
with P weights costs 6P per token it processes. Per layer and per token, with hidden size d, feed-forward
size f and the number of keys attended to T:

    self-attention projections (Q, K, V, O)   6 * 4d^2
    attention scores QK^T and the values AV   6 * 2 * T * d      (full, unmasked T x T: what SDPA computes)
    feed-forward (2 matrices; 3 if gated)     6 * 2 * d * f      (6 * 3 * d * f)
    cross-attention (decoder layers)          6 * 4d^2 projections (K, V over the encoder's length)
                                              + 6 * 2 * T_enc * d scores and values

Embedding lookups are free; the output head (a d x d transform plus the d x V decoder) costs 6(d^2 + dV)
per token it is applied to: for MLM only the masked positions, as Graft computes it. MFU is achieved
FLOPs/s divided by the accelerator's peak for the precision in use.
"""

from __future__ import annotations

import torch


def encoder_layer_flops(d: int, f: int, t: int, gated: bool = False) -> float:
    """Training FLOPs of one encoder (or decoder self-attention) layer for one token attending to t keys."""
    return 6 * (4 * d * d + 2 * t * d + (3 if gated else 2) * d * f)


def cross_attention_flops(d: int, t_enc: int, decoder_tokens: int, encoder_tokens: int) -> float:
    """Training FLOPs of one decoder layer's cross-attention: Q, O on decoder tokens, K, V on encoder tokens."""
    return 6 * (2 * d * d * decoder_tokens + 2 * d * d * encoder_tokens + 2 * t_enc * d * decoder_tokens)


def head_flops(d: int, vocab: int, tokens: float) -> float:
    return 6 * (d * d + d * vocab) * tokens


def encoder_decoder_flops(d: int, f: int, enc_layers: int, dec_layers: int, enc_len: int, dec_len: int,
                          vocab: int, gated: bool = False) -> float:
    """Training FLOPs of one encoder-decoder sample (T5/BART): encoder, decoder self- and cross-attention, LM head."""
    encoder = enc_layers * enc_len * encoder_layer_flops(d, f, enc_len, gated)
    decoder = dec_layers * (dec_len * encoder_layer_flops(d, f, dec_len, gated)
                            + cross_attention_flops(d, enc_len, dec_len, enc_len))
    return encoder + decoder + 6 * d * vocab * dec_len  # T5's head has no d x d transform; close enough for BART


def flops_per_sample(model_cfg, seq_len: int, head_tokens: float) -> float:
    """Training FLOPs of one sample of `seq_len` tokens whose output head runs on `head_tokens` positions."""
    from pretrain.models.bert import BertConfig

    if isinstance(model_cfg, BertConfig):
        c = model_cfg
        return (c.num_layers * seq_len * encoder_layer_flops(c.hidden_size, c.intermediate_size, seq_len)
                + head_flops(c.hidden_size, c.vocab_size, head_tokens))
    raise NotImplementedError(f"no FLOPs formula for {type(model_cfg).__name__}; add one to pretrain/flops.py")


# Dense peak TFLOP/s per GPU by name fragment and precision (NVIDIA datasheets, without sparsity).
PEAK_TFLOPS = {
    "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},  # SXM; the PCIe card is 756
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5},
    "L40S": {"bf16": 362.0, "fp16": 362.0, "fp32": 91.6},
    "A10": {"bf16": 125.0, "fp16": 125.0, "fp32": 31.2},
    "V100": {"bf16": 0.0, "fp16": 125.0, "fp32": 15.7},
}


def peak_flops(precision: str, override_tflops: float = 0.0) -> float | None:
    """Peak FLOP/s of this rank's accelerator, or None when unknown (CPU, an unlisted GPU): no MFU then."""
    if override_tflops > 0:
        return override_tflops * 1e12
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    if "H100" in name and "PCIe" in name:
        return {"bf16": 756e12, "fp16": 756e12, "fp32": 51e12}[precision]
    for fragment, peaks in PEAK_TFLOPS.items():
        if fragment in name and peaks[precision] > 0:
            return peaks[precision] * 1e12
    return None


def batch_flops(model_cfg, micro_batches: list[dict]) -> float:
    """Training FLOPs of this rank's micro-batches; the head counts labelled positions when there are labels."""
    from data_pipeline.collators.mlm import IGNORE

    total = 0.0
    for batch in micro_batches:
        samples, seq_len = batch["input_ids"].shape
        head = int((batch["labels"] != IGNORE).sum()) if "labels" in batch else samples * seq_len
        total += samples * flops_per_sample(model_cfg, seq_len, head / samples)
    return total
