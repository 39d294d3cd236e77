"""MASS (Song et al. 2019): a contiguous fragment of about half the segment is masked in the encoder; the
decoder predicts it, seeing only the fragment shifted right, at the fragment's original positions.

Per row (noise from (seed, sample index)): fragment length m = round(fraction x n) of the n body tokens, its
start as MASS's `mask_start` draws it (the first body token 20% of the time, the last possible start 20%,
uniform in between 60%); the fragment's encoder positions become the mask token 80% of the time, a
random token 10%, unchanged 10% (MASS's word_mask_keep_rand 0.8,0.1,0.1). The decoder input at fragment
position p is the original token at p - 1 (the first is the token before the fragment: <s>, or the decoder
start for T5), with position id p; labels are the fragment. For T5 (no mask token) <extra_id_0> masks.

Output: input_ids, attention_mask [B, seq_len]; decoder_input_ids, decoder_position_ids, labels [B, m]. The
decoder must use decoder_position_ids (not 0..m-1) and a causal mask over its m positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_pipeline.collators.boundaries import body_sources, gather_body
from data_pipeline.errors import UserError
from data_pipeline.loader import seeded_rng, to_tensors
from data_pipeline.packing import SegmentBatch


@dataclass
class MassConfig:
    fragment: float = 0.5  # share of the segment masked as one contiguous fragment
    replace_with_mask: float = 0.8  # of the fragment's encoder tokens: become the mask token
    replace_with_random: float = 0.1  # become a random token; the rest stay

    def __post_init__(self):
        if not 0 < self.fragment < 1:
            raise UserError(f"objective.mass.fragment must be in (0, 1), got {self.fragment}")
        if not (self.replace_with_mask >= 0 and self.replace_with_random >= 0
                and self.replace_with_mask + self.replace_with_random <= 1):
            raise UserError("objective.mass.replace_with_mask + replace_with_random must be within [0, 1]")


def fragment_start(last: int, rng: np.random.Generator) -> int:
    """MASS's `mask_start` over starts 0..last: 0 with probability 0.2, `last` with 0.2, else uniform."""
    draw = rng.random()
    if draw >= 0.8:
        return 0
    if draw >= 0.6:
        return last
    return int(rng.integers(0, last + 1))


class MassCollator:
    def __init__(self, cfg: MassConfig, special_tokens: dict[str, int], vocab_size: int, seq_len: int, seed: int):
        self.cfg, self.seq_len, self.seed, self.vocab_size = cfg, seq_len, seed, vocab_size
        self.bos = special_tokens.get("bos")  # BART: <s> ... </s>; T5: ... </s>
        self.eos, self.pad = special_tokens["eos"], special_tokens["pad"]
        self.mask = special_tokens.get("mask", special_tokens.get("sentinel_0"))
        self.start = self.bos if self.bos is not None else self.pad  # the decoder's first input
        self.lead = int(self.bos is not None)

    @property
    def raw_length(self) -> int:
        return self.seq_len - 1 - self.lead

    @property
    def fragment_length(self) -> int:
        return max(1, round(self.cfg.fragment * self.raw_length))

    def __call__(self, batch: SegmentBatch) -> dict:
        n, width, m = len(batch), self.raw_length, self.fragment_length
        body = gather_body(batch.tokens[:, :width], body_sources(batch.doc_start, width), self.eos)
        rows = np.empty((n, self.seq_len), dtype=np.int64)
        if self.lead:
            rows[:, 0] = self.bos
        rows[:, self.lead:-1], rows[:, -1] = body, self.eos
        inputs = rows.copy()
        dec_in = np.empty((n, m), dtype=np.int64)
        positions = np.empty((n, m), dtype=np.int64)
        labels = np.empty((n, m), dtype=np.int64)
        for r, index in enumerate(batch.indices):
            rng = seeded_rng(self.seed, int(index))
            start = self.lead + fragment_start(width - m, rng)
            where = np.arange(start, start + m)
            labels[r], positions[r] = rows[r, where], where
            dec_in[r] = np.concatenate([[rows[r, start - 1] if start > 0 else self.start], rows[r, where[:-1]]])
            draw = rng.random(m)
            random = rng.integers(0, self.vocab_size, m)
            inputs[r, where] = np.where(draw < self.cfg.replace_with_mask, self.mask,
                                        np.where(draw < self.cfg.replace_with_mask + self.cfg.replace_with_random,
                                                 random, rows[r, where]))
        return to_tensors({"input_ids": inputs, "attention_mask": np.ones_like(inputs),
                           "decoder_input_ids": dec_in, "decoder_position_ids": positions, "labels": labels})
