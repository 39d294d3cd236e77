"""StructBERT (Wang et al. 2019): the word-structural objective and the three-way sentence-structural task,
with MLM.

Rows are [CLS] A [SEP] B [SEP] split as NSP rows are. The sentence task (label per row, noise from (seed,
sample index)): 0 B follows A (1/3), 1 B precedes A (A and B swapped, 1/3), 2 B is from a random other
segment of the corpus (1/3, the loader's partner segment, as NSP's). Word structure: trigrams of ordinary,
unmasked tokens (about `shuffle_prob` of the tokens, in disjoint trigrams) are shuffled in place; the model
puts them back: structural_labels holds the original token at each shuffled position. MLM masking (BERT's
80/10/10) applies to the other tokens.

Output: input_ids, labels (MLM), structural_labels, token_type_ids [B, T]; sentence_labels [B].
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

TRIGRAM = 3


@dataclass
class StructBERTConfig:
    shuffle_prob: float = 0.05  # share of tokens in shuffled trigrams (StructBERT's 5%)
    word_weight: float = 1.0  # the word-structural term's weight beside MLM's (StructBERT sums the terms: 1)

    def __post_init__(self):
        if not 0 <= self.shuffle_prob < 0.5:
            raise UserError(f"objective.structbert.shuffle_prob must be in [0, 0.5), got {self.shuffle_prob}")
        if not self.word_weight >= 0:
            raise UserError(f"objective.structbert.word_weight must be >= 0, got {self.word_weight}")


class StructBERTCollator:
    wants_partner = True  # the loader reads a random other segment per row

    def __init__(self, cfg: StructBERTConfig, mlm: MLMConfig, special_tokens: dict[str, int], vocab_size: int,
                 seq_len: int, seed: int):
        self.cfg, self.seed = cfg, seed
        self.nsp = SentencePairCollator(mlm, special_tokens, vocab_size, seq_len, seed, "nsp")

    @property
    def raw_length(self) -> int:
        return self.nsp.raw_length

    def __call__(self, batch: SegmentBatch) -> dict:
        tasks, pairs, words = seeded_rng_groups([self.seed ^ 0x5B, self.seed, self.seed ^ 0x7A1], batch.indices)
        task = np.array([int(rng.integers(3)) for rng in tasks], dtype=np.int64)
        # 1: previous (A and B swapped), 2: B from another segment
        pairs = self.nsp.pair_rows(batch, kinds=task, rngs=pairs)
        out = {k: pairs[k] for k in ("input_ids", "labels", "token_type_ids")}
        ids, length = out["input_ids"], out["input_ids"].shape[1]
        structural = np.full_like(ids, IGNORE)
        free = ~np.isin(ids, (self.nsp.cls, self.nsp.sep)) & (out["labels"] == IGNORE)
        rows, columns = np.nonzero(free[:, :-2] & free[:, 1:-1] & free[:, 2:])  # where a trigram may start
        ends = np.cumsum(np.bincount(rows, minlength=len(ids))).tolist()
        count = int(round(self.cfg.shuffle_prob * length / TRIGRAM))
        first = 0
        for r, rng in enumerate(words):
            starts, first = columns[first:ends[r]], ends[r]
            left, taken = count, np.zeros(length, dtype=bool)
            for s in rng.permutation(starts).tolist():
                if left == 0:
                    break
                if taken[s:s + TRIGRAM].any():
                    continue
                original = ids[r, s:s + TRIGRAM].copy()
                ids[r, s:s + TRIGRAM] = original[rng.permutation(TRIGRAM)]
                structural[r, s:s + TRIGRAM] = original
                taken[s:s + TRIGRAM] = True
                left -= 1
        return to_tensors({**out, "structural_labels": structural, "sentence_labels": task})
