"""UniLM (Dong et al. 2019): one encoder trained as four language models through its attention mask.

Each row is [CLS] A [SEP] B [SEP] (token types 0 then 1), split as NSP/SOP rows are (a sentence start in
the middle half, or a random token on format-1 data). Its mode is drawn per sample from (seed, sample index)
with UniLM's shares (bidirectional 1/3, seq2seq 1/3, left-to-right 1/6, right-to-left 1/6 by default), so
the mix within a batch is UniLM's in expectation and a sample's mode never depends on its batch. MLM
masking (BERT's 80/10/10 of mask_prob of the tokens) applies in every mode; in seq2seq mode only B's tokens
are predicted.

Masks (True = query i may attend to key j): bidirectional: all; left-to-right: j <= i; right-to-left:
j >= i; seq2seq: j in the source ([CLS] A [SEP]) for every i, and j in the target with j <= i for i in
the target. Output: input_ids, labels, token_type_ids, attention_mask [B, T, T] bool, lm_mode [B]
(0 bidirectional, 1 seq2seq, 2 left-to-right, 3 right-to-left).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_pipeline.collators.mlm import IGNORE, MLMConfig
from data_pipeline.collators.sentence_pair import SentencePairCollator
from data_pipeline.errors import UserError
from data_pipeline.loader import to_tensors
from data_pipeline.packing import SegmentBatch
from data_pipeline.seed_sequence import seeded_rng_groups

MODES = ("bidirectional", "seq2seq", "left_to_right", "right_to_left")


@dataclass
class UniLMConfig:
    shares: tuple[float, float, float, float] = (1 / 3, 1 / 3, 1 / 6, 1 / 6)  # of the four MODES, in order

    def __post_init__(self):
        self.shares = tuple(float(s) for s in self.shares)
        if len(self.shares) != 4 or min(self.shares) < 0 or abs(sum(self.shares) - 1) > 1e-6:
            raise UserError(f"objective.unilm.shares must be four non-negative numbers summing to 1, got "
                            f"{self.shares}")


def unilm_mask(mode: int, length: int, source_length: int) -> np.ndarray:
    """[length, length] bool, True where query i may attend to key j, for MODES[mode]; the source is the
    first `source_length` positions (seq2seq and the single-stack prefix LM)."""
    return unilm_masks(np.array([mode]), length, np.array([source_length]))[0]


def unilm_masks(modes: np.ndarray, length: int, source_lengths: np.ndarray) -> np.ndarray:
    """[B, length, length]: `unilm_mask` of each row's mode and source length."""
    i, j = np.arange(length)[:, None], np.arange(length)[None, :]
    mode, source = modes[:, None, None], source_lengths[:, None, None]
    seq2seq = (j < source) | ((i >= source) & (j <= i))
    return np.where(mode == 0, True, np.where(mode == 2, j <= i, np.where(mode == 3, j >= i, seq2seq)))


class UniLMCollator:
    def __init__(self, cfg: UniLMConfig, mlm: MLMConfig, special_tokens: dict[str, int], vocab_size: int,
                 seq_len: int, seed: int):
        self.cfg, self.seed = cfg, seed
        self.pairs = SentencePairCollator(mlm, special_tokens, vocab_size, seq_len, seed, "sop")
        self.cumulative = np.cumsum(cfg.shares)

    @property
    def raw_length(self) -> int:
        return self.pairs.raw_length

    def __call__(self, batch: SegmentBatch) -> dict:
        pairs, modes = seeded_rng_groups([self.seed, self.seed ^ 0x0411], batch.indices)
        out = self.pairs.pair_rows(batch, swap=False, rngs=pairs)
        ids, types, labels = out["input_ids"], out["token_type_ids"], out["labels"]
        draws = np.array([rng.random() for rng in modes])
        modes = np.minimum(np.searchsorted(self.cumulative, draws, side="right"), 3).astype(np.int64)
        sources = (types == 0).sum(axis=1)
        # seq2seq: only the target is predicted; the source keeps its tokens
        in_source = (modes[:, None] == 1) & (np.arange(ids.shape[1])[None, :] < sources[:, None])
        ids = np.where(in_source & (labels != IGNORE), labels, ids)
        labels = np.where(in_source, IGNORE, labels)
        return to_tensors({"input_ids": ids, "labels": labels, "token_type_ids": types,
                           "attention_mask": unilm_masks(modes, ids.shape[1], sources), "lm_mode": modes})
