"""XLM's translation language modelling: a parallel pair in one row, both sides masked, positions restarting
at the second side, each token's language as its token type.

Rows are [CLS] side1 [SEP] side2 [SEP] ... cut from the packed stream of pairs (parallel datasets record
where each pair's second side starts and every token's language). A separator goes before every document
(pair) and every second side; positions count from 0 again after each separator, as XLM restarts them for
the second sentence. MLM masking is BERT's 80/10/10 over both sides, so a masked word can be read off its
translation. (Monolingual MLM over several languages with language ids is not built yet: prepare records
languages only for parallel text.)

Output: input_ids, labels, position_ids, token_type_ids (the language index of manifest.languages; the
separator before a side takes that side's language), all [B, seq_len].
"""

from __future__ import annotations

import numpy as np

from data_pipeline.collators.boundaries import body_sources, gather_body, require_boundaries
from data_pipeline.collators.mlm import MLMCollator, MLMConfig
from data_pipeline.loader import to_tensors
from data_pipeline.packing import SegmentBatch


class TLMCollator:
    def __init__(self, cfg: MLMConfig, special_tokens: dict[str, int], vocab_size: int, seq_len: int, seed: int):
        self.mlm = MLMCollator(cfg, special_tokens, vocab_size, seq_len, seed)
        self.seq_len = seq_len

    @property
    def raw_length(self) -> int:
        return self.seq_len - 2

    def __call__(self, batch: SegmentBatch) -> dict:
        require_boundaries(batch, "tlm", parallel=True)
        n, width = len(batch), self.raw_length
        src = body_sources(batch.doc_start, width, extra_starts=batch.side_start)
        ids = np.empty((n, self.seq_len), dtype=np.int64)
        ids[:, 0], ids[:, -1] = self.mlm.cls, self.mlm.sep
        ids[:, 1:-1] = gather_body(batch.tokens[:, :width], src, self.mlm.sep)
        # The separator before a side has that side's language: the next column's.
        after = np.minimum(np.where(src >= 0, src, np.roll(src, -1, axis=1)), width - 1)
        language = np.empty((n, self.seq_len), dtype=np.int64)
        language[:, 1:-1] = np.take_along_axis(batch.language[:, :width], np.maximum(after, 0), axis=1)
        language[:, 0], language[:, -1] = language[:, 1], language[:, -2]
        # Positions restart after every separator ([CLS] counts as one).
        restart = ids == self.mlm.sep
        restart[:, 0] = True
        column = np.arange(self.seq_len)[None, :]
        last = np.maximum.accumulate(np.where(restart, column, 0), axis=1)
        positions = column - last
        inputs, labels = self.mlm.mask_batch(ids, batch.indices)
        return to_tensors({"input_ids": inputs, "labels": labels, "position_ids": positions,
                           "token_type_ids": language})
