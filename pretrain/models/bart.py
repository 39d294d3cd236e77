"""BART: post-LN encoder-decoder with learned positions (offset 2) and an embedding LayerNorm.
Architecturally `transformers.BartForConditionalGeneration`: LM head tied to the shared embedding plus the
`final_logits_bias` buffer."""

from __future__ import annotations

from collections.abc import Mapping
import math

import torch
from torch import nn

from pretrain.models.config import ModelConfig
from pretrain.models.encoder import init_weights
from pretrain.models.attention import causal_mask, padding_mask
from pretrain.models.output import ModelOutput
from pretrain.models.layers import LayerStack, TransformerLayer
from pretrain.models.positions import AbsolutePositions

POSITION_OFFSET = 2  # fairseq's learned positions start at index 2; transformers keeps the offset


class BartStack(nn.Module):
    def __init__(self, cfg: ModelConfig, depth: int, decoder: bool):
        super().__init__()
        self.positions = AbsolutePositions(cfg.max_position_embeddings + POSITION_OFFSET, cfg.hidden_size,
                                           start=POSITION_OFFSET)
        self.embed_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.stack = LayerStack(
            lambda: TransformerLayer(cfg.hidden_size, cfg.num_heads, cfg.intermediate_size, cfg.hidden_dropout,
                                     cfg.attention_dropout, cfg.layer_norm_eps, activation=cfg.hidden_act,
                                     cross_attention=decoder),
            depth, layerdrop=cfg.layerdrop, checkpointing=cfg.activation_checkpointing)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.decoder = decoder

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """`position_ids` [B, T]: explicit positions (MASS's decoder at its fragment's place); absent: 0..T-1."""
        if position_ids is not None:
            positions = self.positions.at(position_ids)
        else:
            positions = self.positions.embedding(tokens[..., 0])  # [B, T]: BART's positions read only its shape
        x = self.dropout(self.embed_norm(tokens + positions))
        if self.decoder:
            mask = causal_mask(tokens.shape[1], attention_mask, x.device)
            return self.stack(x, mask=mask, context=context, context_mask=padding_mask(context_mask)).hidden
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

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(self.shared(input_ids) * self.embed_scale, attention_mask)

    def forward(self, batch: Mapping) -> ModelOutput:
        """Decoder logits [B, T_dec, V], or [N, V] at the True entries of `batch["positions"]` [B, T_dec]."""
        encoded = self.encode(batch["input_ids"], batch.get("attention_mask"))
        hidden = self.decoder(self.shared(batch["decoder_input_ids"]) * self.embed_scale,
                              batch.get("decoder_attention_mask"), encoded, batch.get("attention_mask"),
                              batch.get("decoder_position_ids"))
        positions = batch.get("positions")
        logits = self.lm_head(hidden if positions is None else hidden[positions]) + self.final_logits_bias.squeeze(0)
        return ModelOutput(logits, hidden=hidden)
