"""Training FLOPs per step, for MFU. The formula (also in docs/training.md, "Observability"):

Every matrix multiply of m x k by k x n costs 2mkn FLOPs forward and twice that backward, so a dense layer
with P weights costs 6P per token it processes. Per layer and per token, with hidden size d, attention width
a (heads x head size; d except in some T5s), feed-forward size f and the number of keys attended to T (with
Transformer-XL recurrence: the segment plus the encoder's memory of mem_len positions):

    self-attention projections (Q, K, V, O)   6 * 4da
    attention scores QK^T and the values AV   6 * 2Ta            (full, unmasked T x T: what SDPA computes)
    feed-forward (2 matrices; 3 if gated)     6 * 2df            (6 * 3df: T5 v1.1's gated GELU)
    cross-attention (decoder layers)          6 * 2da per decoder token (Q, O) + 6 * 2da per encoder token (K, V)
                                              + 6 * 2 T_enc a per decoder token

Embedding lookups are free; a factorized embedding (ALBERT, ELECTRA: size e < d) costs 6ed per token for
its projection. Output heads cost 6P per position they run on, and Graft runs the vocabulary projection only
where the loss needs it (the labelled positions): the MLM head (d x e transform, e x V decoder) 6(de + eV),
T5's and BART's LM head 6dV. When the loss reads only the MLM logits (mlm, tlm, unilm, multilingual_mlm),
BERT, RoBERTa and ALBERT run their last layer at the labelled positions alone: that layer counts K and V on
every token (6 * 2da) and the rest on the labelled positions only. ELECTRA counts its generator (an encoder with
the MLM head on the masked positions) plus its discriminator (every token, head d x d + d x 1). ALBERT's shared
layer counts once per application. The NSP/SOP classifier (a few d x d per sample) is left out. MFU is achieved
FLOPs/s divided by the accelerator's peak for the precision in use.
"""

from __future__ import annotations

import torch

from pretrain.models.encoder import last_layer_at_positions


def encoder_layer_flops(d: int, f: int, t: int, gated: bool = False, width: int | None = None) -> float:
    """Training FLOPs of one encoder (or decoder self-attention) layer for one token attending to t keys."""
    a = width or d
    return 6 * (4 * d * a + 2 * t * a + (3 if gated else 2) * d * f)


def cross_attention_flops(d: int, t_enc: int, decoder_tokens: int, encoder_tokens: int,
                          width: int | None = None) -> float:
    """Training FLOPs of one decoder layer's cross-attention: Q, O on decoder tokens, K, V on encoder tokens."""
    a = width or d
    return 6 * (2 * d * a * decoder_tokens + 2 * d * a * encoder_tokens + 2 * t_enc * a * decoder_tokens)


def _width(cfg) -> int:
    return (cfg.head_dim or cfg.hidden_size // cfg.num_heads) * cfg.num_heads


def _memory(cfg) -> int:
    """Memory positions each encoder query also attends to (Transformer-XL recurrence): mem_len, as in steady
    state (the memory is full after mem_len / seq_len segments of a lane)."""
    return cfg.recurrence.mem_len


def encoder_flops(cfg, seq_len: int, head_tokens: float, last_at_head: bool = False) -> float:
    """One sample of `seq_len` tokens through an encoder, its MLM head on `head_tokens` positions; with
    `last_at_head`, the last layer's queries, output and feed-forward on those positions only (K and V on all)."""
    d, e, a = cfg.hidden_size, cfg.embed_size, _width(cfg)
    keys = seq_len + _memory(cfg)
    per_token = encoder_layer_flops(d, cfg.intermediate_size, keys, width=a)
    layers = cfg.num_layers * seq_len * per_token
    if last_at_head:
        layers -= (seq_len - head_tokens) * (per_token - 6 * 2 * d * a)
    projection = 6 * e * d * seq_len if e != d else 0
    return layers + projection + 6 * (d * e + e * cfg.vocab_size) * head_tokens


def electra_flops(cfg, seq_len: int, head_tokens: float) -> float:
    """ELECTRA: the generator with its MLM head on the masked positions, then the discriminator on every token."""
    d = cfg.hidden_size
    return encoder_flops(cfg.generator, seq_len, head_tokens) + encoder_flops(cfg, seq_len, 0) \
        + 6 * (d * d + d) * seq_len


def encoder_decoder_flops(cfg, enc_len: int, dec_len: int, head_tokens: float) -> float:
    """T5/BART: the encoder over `enc_len`, the decoder's self-attention over `dec_len` and cross-attention over
    `enc_len`, the LM head on `head_tokens` decoder positions."""
    d, f, a, gated = cfg.hidden_size, cfg.intermediate_size, _width(cfg), cfg.family == "t5"
    encoder = cfg.num_layers * enc_len * encoder_layer_flops(d, f, enc_len + _memory(cfg), gated, a)
    decoder = cfg.decoder_layers * (dec_len * encoder_layer_flops(d, f, dec_len, gated, a)
                                    + cross_attention_flops(d, enc_len, dec_len, enc_len, a))
    return encoder + decoder + 6 * d * cfg.vocab_size * head_tokens


def flops_per_sample(cfg, seq_len: int, head_tokens: float, decoder_len: int = 0,
                     logits_only: bool = False) -> float:
    """Training FLOPs of one sample of `seq_len` (encoder) tokens and, for T5/BART, `decoder_len` decoder
    tokens, whose output head runs on `head_tokens` positions. `logits_only`: the loss reads only the MLM
    logits (`Objective.logits_only`), so an encoder that can runs its last layer at those positions alone."""
    if cfg.is_encoder_decoder:
        return encoder_decoder_flops(cfg, seq_len, decoder_len, head_tokens)
    if cfg.family == "electra":
        return electra_flops(cfg, seq_len, head_tokens)
    return encoder_flops(cfg, seq_len, head_tokens, logits_only and last_layer_at_positions(cfg))


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


def batch_flops(model_cfg, micro_batches: list[dict], logits_only: bool = False) -> float:
    """Training FLOPs of this rank's micro-batches; the head counts labelled positions when there are labels.
    `logits_only`: the objective's loss reads only the MLM logits (`pretrain.objectives.reads_logits_only`)."""
    from data_pipeline.collators.mlm import IGNORE

    total = 0.0
    for batch in micro_batches:
        samples, seq_len = batch["input_ids"].shape
        decoder_len = batch["decoder_input_ids"].shape[1] if "decoder_input_ids" in batch else 0
        head = int((batch["labels"] != IGNORE).sum()) if "labels" in batch else samples * (decoder_len or seq_len)
        last_at_head = logits_only and "perm_mask" not in batch
        total += samples * flops_per_sample(model_cfg, seq_len, head / samples, decoder_len, last_at_head)
        if "perm_mask" in batch:  # XLNet's query stream: a second pass of every encoder layer over every token
            total += samples * encoder_flops(model_cfg, seq_len, 0)
    return total
