"""T5's prefix LM for encoder-decoders: a segment split at a uniformly drawn point; the encoder reads the
prefix, the decoder writes the rest.

T5's `random_prefix_noise_mask` at noise density 0.5: the prefix has between 1 and n - 1 of the segment's
n tokens, uniformly. Inputs are prefix + </s>, targets the rest + </s>, each padded to seq_len (labels
IGNORE on padding). The single-stack form of a prefix LM is UniLM's seq2seq mask (unilm.py).
"""

from __future__ import annotations

import numpy as np

from data_pipeline.collators.boundaries import body_sources, gather_body
from data_pipeline.collators.mlm import IGNORE
from data_pipeline.loader import seeded_rng, to_tensors
from data_pipeline.packing import SegmentBatch


def prefix_length(n: int, rng: np.random.Generator, noise_density: float = 0.5) -> int:
    """T5's number of input tokens of a length-n segment: uniform in [min, n - 1], min from the density."""
    most = n - 1
    least = min(most, max(1, round((1 - 2 * noise_density) * most)))
    return int(rng.integers(least, most + 1))


class PrefixLMCollator:
    def __init__(self, special_tokens: dict[str, int], seq_len: int, seed: int):
        self.seq_len, self.seed = seq_len, seed
        self.eos, self.pad = special_tokens["eos"], special_tokens["pad"]

    @property
    def raw_length(self) -> int:
        return self.seq_len - 1  # the longer side has at most n - 1 tokens, + </s>

    def __call__(self, batch: SegmentBatch) -> dict:
        n, width = len(batch), self.raw_length
        tokens = gather_body(batch.tokens[:, :width], body_sources(batch.doc_start, width), self.eos)
        inputs = np.full((n, self.seq_len), self.pad, dtype=np.int64)
        labels = np.full((n, self.seq_len), IGNORE, dtype=np.int64)
        for row, index in enumerate(batch.indices):
            cut = prefix_length(width, seeded_rng(self.seed, int(index)))
            inputs[row, :cut + 1] = np.append(tokens[row, :cut], self.eos)
            labels[row, :width - cut + 1] = np.append(tokens[row, cut:], self.eos)
        targets = np.where(labels == IGNORE, self.pad, labels)
        decoder_inputs = np.concatenate([np.full((n, 1), self.pad), targets[:, :-1]], axis=1)
        return to_tensors({"input_ids": inputs, "attention_mask": (inputs != self.pad).astype(np.int64),
                           "decoder_input_ids": decoder_inputs, "labels": labels})
