"""BART: post-LN encoder-decoder with learned positions (offset 2) and an embedding LayerNorm.
Architecturally `transformers.BartForConditionalGeneration`: LM head tied to the shared embedding plus the
`final_logits_bias` buffer.

With model.positions=xl each stack has Transformer-XL's relative positions instead of learned ones (as the
encoder families: `XLRelative`, its biases shared by the stack's layers), and with model.recurrence.mem_len
the encoder carries a memory across the segments of a long input; the decoder attends to the current
segment's encoder output only (causal, relative positions within its own sequence)."""

from __future__ import annotations

from collections.abc import Mapping
import math

import torch
from torch import nn

from pretrain.models.config import ModelConfig
from pretrain.models.encoder import init_weights
from pretrain.models.attention import causal_mask, padding_mask
from pretrain.models.memory import MemoryCache, stack_with_memory
from pretrain.models.output import ModelOutput
from pretrain.models.layers import LayerStack, TransformerLayer
from pretrain.models.positions import AbsolutePositions, XLRelative

POSITION_OFFSET = 2  # fairseq's learned positions start at index 2; transformers keeps the offset


class BartStack(nn.Module):
    def __init__(self, cfg: ModelConfig, depth: int, decoder: bool):
        super().__init__()
        self.relative = cfg.positions == "xl"
        self.positions = XLRelative(cfg.hidden_size, cfg.num_heads, cfg.hidden_size // cfg.num_heads,
                                    cfg.recurrence.clamp_len) if self.relative else \
            AbsolutePositions(cfg.max_position_embeddings + POSITION_OFFSET, cfg.hidden_size, start=POSITION_OFFSET)
        self.embed_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.stack = LayerStack(
            lambda: TransformerLayer(cfg.hidden_size, cfg.num_heads, cfg.intermediate_size, cfg.hidden_dropout,
                                     cfg.attention_dropout, cfg.layer_norm_eps, activation=cfg.hidden_act,
                                     cross_attention=decoder),
            depth, layerdrop=cfg.layerdrop, checkpointing=cfg.activation_checkpointing)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.decoder = decoder
        self.mem_len = 0 if decoder else cfg.recurrence.mem_len  # the decoder attends to this segment only

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None, cache: MemoryCache | None = None,
                doc_index: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """tokens: the scaled token embeddings [B, T, H]. The encoder with relative positions reads and advances
        the memory in `cache` (see `pretrain.models.memory`). `position_ids` [B, T]: explicit positions (MASS's
        decoder at its fragment's place); absent: 0..T-1."""
        if not self.relative:
            if position_ids is not None:
                tokens = tokens + self.positions.at(position_ids)
            else:
                tokens = tokens + self.positions.embedding(tokens[..., 0])  # [B, T]: BART's positions read its shape
        x = self.dropout(self.embed_norm(tokens))
        if self.decoder:
            t = tokens.shape[1]
            return self.stack(x, mask=causal_mask(t, attention_mask, x.device), context=context,
                              context_mask=padding_mask(context_mask),
                              score=self.positions.attention_score(t, t)).hidden
        if self.relative:
            return stack_with_memory(self.stack, self.positions, x, attention_mask, cache, doc_index, self.mem_len)
        return self.stack(x, mask=padding_mask(attention_mask)).hidden


class BartForConditionalGeneration(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embed_scale = math.sqrt(cfg.hidden_size) if cfg.scale_embedding else 1.0
        self.shared = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.encoder = BartStack(cfg, cfg.num_layers, decoder=False)
        self.decoder = BartStack(cfg, cfg.decoder_layers, decoder=True)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.shared.weight
        self.register_buffer("final_logits_bias", torch.zeros(1, cfg.vocab_size))
        init_weights(self, cfg.initializer_range, skip=(self.lm_head,))

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               cache: MemoryCache | None = None, doc_index: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(self.shared(input_ids) * self.embed_scale, attention_mask, cache=cache,
                            doc_index=doc_index)

    def forward(self, batch: Mapping) -> ModelOutput:
        """Decoder logits [B, T_dec, V], or [N, V] at the True entries of `batch["positions"]` [B, T_dec]."""
        encoded = self.encode(batch["input_ids"], batch.get("attention_mask"), batch.get("memory"),
                              batch.get("doc_index"))
        hidden = self.decoder(self.shared(batch["decoder_input_ids"]) * self.embed_scale,
                              batch.get("decoder_attention_mask"), encoded, batch.get("attention_mask"),
                              position_ids=batch.get("decoder_position_ids"))
        positions = batch.get("positions")
        logits = self.lm_head(hidden if positions is None else hidden[positions]) + self.final_logits_bias.squeeze(0)
        return ModelOutput(logits, hidden=hidden)
