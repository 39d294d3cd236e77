"""ELECTRA: a small MLM generator and a discriminator that share their embeddings, trained jointly.

The discriminator is architecturally `transformers.ElectraForPreTraining`, the generator (with the shared
embeddings) `transformers.ElectraForMaskedLM`; export writes both. The replaced-token-detection objective
asks the model twice through `forward` (batch["task"]): once for generator logits, once for discriminator logits on the
corrupted input, so the sampling in between stays in the objective.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from pretrain.models.config import ModelConfig
from pretrain.models.output import ModelOutput
from pretrain.models.encoder import ACTIVATIONS, Embeddings, Encoder, MLMHead, init_weights

TASKS = ("generator", "discriminator")


class DiscriminatorHead(nn.Module):
    """dense -> activation -> one logit per token (replaced or original)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.act = ACTIVATIONS[cfg.hidden_act]
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.prediction = nn.Linear(cfg.hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.prediction(self.act(self.dense(hidden))).squeeze(-1)


class ElectraForPreTraining(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        gen_cfg = cfg.generator
        self.generator = Encoder(gen_cfg)
        self.generator_head = MLMHead(gen_cfg, self.embeddings.word, "gelu")
        self.discriminator = Encoder(cfg)
        self.discriminator_head = DiscriminatorHead(cfg)
        init_weights(self, cfg.initializer_range, skip=(self.generator_head.decoder,))

    def forward(self, batch: Mapping) -> ModelOutput:
        """batch["task"] "generator": MLM logits [B, T, V] (or [N, V] at `positions`); "discriminator" (the
        default): replaced-token logits [B, T]."""
        task = batch.get("task", "discriminator")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        x = self.embeddings(batch["input_ids"], batch.get("token_type_ids"))
        if task == "generator":
            hidden = self.generator(x, batch.get("attention_mask"))
            positions = batch.get("positions")
            return ModelOutput(self.generator_head(hidden if positions is None else hidden[positions]), hidden=hidden)
        hidden = self.discriminator(x, batch.get("attention_mask"))
        return ModelOutput(self.discriminator_head(hidden), hidden=hidden)
