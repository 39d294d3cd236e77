"""ELECTRA: a small MLM generator and a discriminator that share their embeddings, trained jointly.

The discriminator is architecturally `transformers.ElectraForPreTraining`, the generator (with the shared
embeddings) `transformers.ElectraForMaskedLM`; export writes both. The replaced-token-detection objective
asks the model twice through `forward`: once for generator logits, once for discriminator logits on the
corrupted input, so the sampling in between stays in the objective.
"""

from __future__ import annotations

import torch
from torch import nn

from pretrain.models.config import ModelConfig
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

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, positions: torch.Tensor | None = None,
                task: str = "discriminator") -> torch.Tensor:
        """task "generator": MLM logits [B, T, V] (or [N, V] at the bool mask `positions`);
        task "discriminator": replaced-token logits [B, T]."""
        x = self.embeddings(input_ids, token_type_ids)
        if task == "generator":
            hidden = self.generator(x, attention_mask)
            return self.generator_head(hidden if positions is None else hidden[positions])
        if task == "discriminator":
            return self.discriminator_head(self.discriminator(x, attention_mask))
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
