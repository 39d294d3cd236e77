"""The objectives' pretraining-only heads (attached by `pretrain.models.objective_heads`; never exported).

- `SpanBoundaryHead` (SpanBERT's SBO, `BertPairTargetPredictionHead` of its reference): each masked token of a
  span is predicted from the encoder outputs of the two tokens just outside the span and an embedding of its
  place in the span: [h_left; h_right; p_i] -> Linear -> GeLU -> LayerNorm -> Linear -> GeLU -> LayerNorm ->
  the vocabulary projection tied to the word embedding, plus its own bias. As the reference: 200-dimensional
  position embeddings for at most 20 targets a span (a token further in carries no SBO loss).
- `SentenceHead` (StructBERT's sentence-structural task): BERT's pooler (dense + tanh on [CLS]) and a 3-way
  classifier (next, previous, random).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from pretrain.models.config import ModelConfig
from pretrain.models.encoder import init_weights
from pretrain.models.layers import ACTIVATIONS

SBO_MAX_TARGETS = 20  # SpanBERT's max_pair_targets
SBO_POSITION_SIZE = 200  # SpanBERT's position embedding size


class SpanBoundaryHead(nn.Module):
    """batch: sbo_left, sbo_right, sbo_position [B, T] (the collator's; position 0 = no label) -> logits [N, V]
    at the N positions with 1 <= sbo_position <= SBO_MAX_TARGETS, in row-major order."""

    def __init__(self, cfg: ModelConfig, word_embedding: nn.Embedding):
        super().__init__()
        self.act = ACTIVATIONS["gelu"]
        self.position = nn.Embedding(SBO_MAX_TARGETS, SBO_POSITION_SIZE)
        self.dense1 = nn.Linear(2 * cfg.hidden_size + SBO_POSITION_SIZE, cfg.hidden_size)
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dense2 = nn.Linear(cfg.hidden_size, cfg.embed_size)  # embed_size: ALBERT's factorized vocabulary
        self.norm2 = nn.LayerNorm(cfg.embed_size, eps=cfg.layer_norm_eps)
        self.decoder = nn.Linear(cfg.embed_size, cfg.vocab_size, bias=False)
        self.decoder.weight = word_embedding.weight
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        init_weights(self, cfg.initializer_range, skip=(self.decoder,))

    def forward(self, hidden: torch.Tensor, batch: Mapping) -> torch.Tensor:
        where = sbo_targets(batch)
        rows = where.nonzero(as_tuple=True)[0]
        left, right = hidden[rows, batch["sbo_left"][where]], hidden[rows, batch["sbo_right"][where]]
        place = self.position(batch["sbo_position"][where] - 1)
        x = self.norm1(self.act(self.dense1(torch.cat([left, right, place], dim=-1))))
        x = self.norm2(self.act(self.dense2(x)))
        return self.decoder(x) + self.bias


def sbo_targets(batch: Mapping) -> torch.Tensor:
    """bool [B, T]: the tokens the span-boundary head predicts."""
    position = batch["sbo_position"]
    return (position >= 1) & (position <= SBO_MAX_TARGETS)


class SentenceHead(nn.Module):
    """Pooler (dense + tanh on the first token) -> `classes`-way classifier: logits [B, classes]."""

    def __init__(self, cfg: ModelConfig, classes: int):
        super().__init__()
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.classifier = nn.Linear(cfg.hidden_size, classes)
        init_weights(self, cfg.initializer_range)

    def forward(self, hidden: torch.Tensor, batch: Mapping) -> torch.Tensor:
        return self.classifier(torch.tanh(self.pooler(hidden[:, 0])))
