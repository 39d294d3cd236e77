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
from data_pipeline.loader import seeded_rng, to_tensors
from data_pipeline.packing import SegmentBatch

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
        self.sop = SentencePairCollator(mlm, special_tokens, vocab_size, seq_len, seed, "sop")

    @property
    def raw_length(self) -> int:
        return self.nsp.raw_length

    def __call__(self, batch: SegmentBatch) -> dict:
        task = np.array([int(seeded_rng(self.seed ^ 0x5B, int(k)).integers(3)) for k in batch.indices])
        swapped = self.sop.pair_rows(batch, flips=task == 1)  # previous: A and B swapped
        replaced = self.nsp.pair_rows(batch, flips=task == 2)  # random: B from another segment
        out = {k: np.where((task == 2)[:, None], replaced[k], swapped[k]) for k in ("input_ids", "labels",
                                                                                   "token_type_ids")}
        label = task.astype(np.int64)
        structural = np.full_like(out["input_ids"], IGNORE)
        specials = (self.nsp.cls, self.nsp.sep)
        for r, index in enumerate(batch.indices):
            rng = seeded_rng(self.seed ^ 0x7A1, int(index))
            ids, labels = out["input_ids"][r], out["labels"][r]
            free = ~np.isin(ids, specials) & (labels == IGNORE)
            starts = np.flatnonzero(free[:-2] & free[1:-1] & free[2:])
            count = int(round(self.cfg.shuffle_prob * len(ids) / TRIGRAM))
            taken = np.zeros(len(ids), dtype=bool)
            for s in rng.permutation(starts):
                if count == 0:
                    break
                if taken[s:s + TRIGRAM].any():
                    continue
                where = np.arange(s, s + TRIGRAM)
                original = ids[where].copy()
                ids[where] = original[rng.permutation(TRIGRAM)]
                structural[r, where] = original
                taken[where] = True
                count -= 1
        return to_tensors({**out, "structural_labels": structural, "sentence_labels": label})
