"""XLM's translation language modelling: a parallel pair in one row, both sides masked, positions restarting
at the second side, each token's language as its token type.

Rows are [CLS] side1 [SEP] side2 [SEP] ... cut from the packed stream of pairs (parallel datasets record
where each pair's second side starts and every token's language). A separator goes before every document
(pair) and every second side; positions count from 0 again after each separator, as XLM restarts them for
the second sentence. MLM masking is BERT's 80/10/10 over both sides, so a masked word can be read off its
translation. `MultilingualMLMCollator` is XLM's MLM on monolingual text of several languages: MLM rows as
MLMCollator's, each token's language as its token type.

Output: input_ids, labels, position_ids, token_type_ids (the language index of manifest.languages; the
separator before a side takes that side's language), all [B, seq_len].
"""

from __future__ import annotations

import numpy as np

from data_pipeline.collators.boundaries import body_sources, gather_body, require_boundaries
from data_pipeline.collators.mlm import MLMCollator, MLMConfig
from data_pipeline.errors import UserError
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
        language = row_languages(batch.language, src, width)
        # Positions restart after every separator ([CLS] counts as one).
        restart = ids == self.mlm.sep
        restart[:, 0] = True
        column = np.arange(self.seq_len)[None, :]
        last = np.maximum.accumulate(np.where(restart, column, 0), axis=1)
        positions = column - last
        inputs, labels = self.mlm.mask_batch(ids, batch.indices)
        return to_tensors({"input_ids": inputs, "labels": labels, "position_ids": positions,
                           "token_type_ids": language})


def row_languages(language: np.ndarray, src: np.ndarray, width: int) -> np.ndarray:
    """[B, width + 2] language ids of [CLS] body [SEP] rows laid out by `body_sources`' map `src`: a separator has
    the language of the text after it (the next document or side), [CLS] the first token's, the last [SEP] the
    last token's."""
    after = np.minimum(np.where(src >= 0, src, np.roll(src, -1, axis=1)), width - 1)
    out = np.empty((len(src), width + 2), dtype=np.int64)
    out[:, 1:-1] = np.take_along_axis(language[:, :width], np.maximum(after, 0), axis=1)
    out[:, 0], out[:, -1] = out[:, 1], out[:, -2]
    return out


class MultilingualMLMCollator(MLMCollator):
    """MLMCollator's rows and masking, plus token_type_ids [B, seq_len]: each token's language (index of
    manifest.languages), for monolingual text of several languages (`graft prepare --language-field`)."""

    def __call__(self, batch: SegmentBatch) -> dict:
        if batch.language is None:
            raise UserError("objective multilingual_mlm needs a dataset that records languages; prepare it with "
                            "`graft prepare DOCS.jsonl --language-field LANG`")
        width = self.raw_length
        src = body_sources(batch.doc_start, width)
        rows = np.empty((len(batch), self.seq_len), dtype=np.int64)
        rows[:, 0], rows[:, 1:-1], rows[:, -1] = self.cls, gather_body(batch.tokens[:, :width], src, self.sep), self.sep
        inputs, labels = self.mask_batch(rows, batch.indices)
        return to_tensors({"input_ids": inputs, "labels": labels, "token_type_ids": row_languages(batch.language, src,
                                                                                                  width)})
