"""The MLM output bias at the training data's unigram prior (`model.output_bias_init: unigram`).

A model whose output bias starts at zero predicts the uniform distribution and must first learn the word
frequencies; Adam moves the bias by about the learning rate a step, far too slowly to reach log-frequencies
that span ten nats, so in a short run the layers carry the frequencies instead and answer the commonest words
everywhere. Starting the bias at the log unigram probabilities puts the model at the unigram loss on step 0.
It changes no architecture: the bias is the MLM head's own (`cls.predictions.bias` in a transformers export).
"""

from __future__ import annotations

import numpy as np
import torch

from data_pipeline.loader import DataConfig
from data_pipeline.packing import PackedSegments
from pretrain.models.encoder import MLMHead

UNIGRAM_TOKENS = 1 << 22  # the counts come from the dataset's first 4M tokens: a prior needs no more
READ_ROWS = 4096  # segments counted per read


def unigram_log_probs(segments: PackedSegments, vocab_size: int, max_tokens: int = UNIGRAM_TOKENS) -> torch.Tensor:
    """float32 [vocab_size]: log of the add-one-smoothed token frequencies over the dataset's first
    `max_tokens` tokens (whole segments), so a token never seen gets a finite, small probability."""
    rows = max(1, min(len(segments), max_tokens // segments.length))
    counts = np.zeros(vocab_size, dtype=np.float64)
    for first in range(0, rows, READ_ROWS):
        picked = np.arange(first, min(rows, first + READ_ROWS))
        tokens = segments.read_batch(picked, picked).tokens.ravel()
        counts += np.bincount(tokens, minlength=vocab_size)[:vocab_size]
    return torch.from_numpy(np.log((counts + 1) / (counts.sum() + vocab_size))).float()


def training_unigram(data: DataConfig, vocab_size: int) -> torch.Tensor:
    """`unigram_log_probs` of the run's training data (`data.path`, local or remote, read as the loader reads
    it): every rank computes the same values from the same tokens."""
    segments = PackedSegments(data.path, data.seq_len, data.cache_dir, data.cache_bytes, data.remote)
    return unigram_log_probs(segments, vocab_size)


def init_output_bias(model: torch.nn.Module, log_probs: torch.Tensor) -> None:
    """Set every MLM head's bias (ELECTRA's generator has one) to `log_probs`. Through `Module.apply`, so that
    under `deepspeed.zero.Init` (ZeRO-3) each head's parameters are gathered while they are written."""

    @torch.no_grad()
    def set_bias(module: torch.nn.Module) -> None:
        if isinstance(module, MLMHead):
            module.bias.copy_(log_probs)

    model.apply(set_bias)
