"""Heads that exist only in pretraining (SpanBERT's span-boundary head, StructBERT's three-way sentence head).

An objective that needs one builds it (`Objective.heads`); the trainer attaches it to the model under
`objective_heads` inside the ZeRO construction context, so DeepSpeed partitions, trains and checkpoints it as any
other weight. The family's forward runs every attached head on its last hidden states and returns the results in
`ModelOutput.heads`, so losses still call the model only through its forward. Export leaves the heads' tensors
out (`is_head_key`): the exported model is the family's ordinary `transformers` class.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

ATTRIBUTE = "objective_heads"
PREFIX = ATTRIBUTE + "."


def attach_heads(model: nn.Module, heads: dict[str, nn.Module]) -> None:
    """Make `heads` (name -> module with forward(hidden, batch)) part of `model`."""
    if heads:
        setattr(model, ATTRIBUTE, nn.ModuleDict(heads))


def head_outputs(model: nn.Module, hidden: torch.Tensor, batch: Mapping) -> dict[str, torch.Tensor] | None:
    """Each attached head's output on `hidden` [B, T, H] and the batch (None when the model has no heads)."""
    heads = getattr(model, ATTRIBUTE, None)
    if heads is None:
        return None
    return {name: head(hidden, batch) for name, head in heads.items()}


def is_head_key(key: str) -> bool:
    """Whether a state-dict key is a pretraining-only head's (left out of exports)."""
    return key.startswith(PREFIX)
