"""Parameter counts of a model config, total and non-embedding, from a model built on the meta device (no
memory, so a 1B preset counts in about a second).

Non-embedding, as in Kaplan et al. (2020): every parameter except the token, position and token-type
embedding tables (the `nn.Embedding` modules, T5's relative position biases among them) and the parameters
that map onto the vocabulary (an untied output projection, the MLM decoder's bias): those whose first
dimension is the vocabulary size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pretrain.models import build_model
from pretrain.models.config import ModelConfig


@dataclass(frozen=True)
class ParamCount:
    total: int  # every distinct parameter (tied ones once)
    non_embedding: int  # without embedding tables and vocabulary-sized output parameters


def count_parameters(cfg: ModelConfig) -> ParamCount:
    with torch.device("meta"):
        model = build_model(cfg, pretrained=False)
    embedding = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    total = non_embedding = 0
    for p in model.parameters():  # yields a tied parameter once
        total += p.numel()
        if id(p) not in embedding and p.shape[0] != cfg.vocab_size:
            non_embedding += p.numel()
    return ParamCount(total, non_embedding)
