"""BART's text infilling: spans with Poisson(3) lengths cover 30% of the tokens; each span becomes one
<mask> (a length-0 span inserts one). The decoder reconstructs the original <s> ... </s>.

The encoder input is as wide as the batch's longest row, not seq_len: infilling shortens every row by about
a fifth, which padding to seq_len would spend on pad positions. For recurrent models (`doc_index`) each
input position also carries its document's number within the segment: a <mask> that of the token it
replaces (or, inserted, the token after it), <s> and </s> those of the first and last tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_pipeline.collators.boundaries import separated_documents
from data_pipeline.collators.mlm import IGNORE
from data_pipeline.errors import UserError
from data_pipeline.loader import seeded_rng, to_tensors
from data_pipeline.packing import SegmentBatch


@dataclass
class InfillingConfig:
    mask_ratio: float = 0.3  # share of tokens inside masked spans (BART's 30%)
    poisson_lambda: float = 3.0  # mean span length; each span becomes one <mask>

    def __post_init__(self):
        if not 0 < self.mask_ratio < 1:
            raise UserError(f"objective.infilling.mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if not self.poisson_lambda > 0:
            raise UserError(f"objective.infilling.poisson_lambda must be positive, got {self.poisson_lambda}")


class TextInfillingCollator:
    def __init__(self, cfg: InfillingConfig, special_tokens: dict[str, int], seq_len: int, seed: int,
                 doc_index: bool = False):
        """`doc_index`: also emit, for recurrent models, the documents begun at or before each input position."""
        if "bos" not in special_tokens:
            raise UserError("text infilling needs <s> </s> <mask>; prepare the data with "
                            "`graft prepare --tokenizer-kind bytelevel_bpe`")
        self.cfg, self.seq_len, self.seed, self.doc_index = cfg, seq_len, seed, doc_index
        self.bos, self.eos = special_tokens["bos"], special_tokens["eos"]
        self.pad, self.mask = special_tokens["pad"], special_tokens["mask"]

    @property
    def raw_length(self) -> int:
        return self.seq_len - 2  # <s> ... </s>

    def __call__(self, batch: SegmentBatch) -> dict:
        samples = batch.segments()  # spans are drawn per sample
        n = len(samples)
        labels = np.empty((n, self.seq_len), dtype=np.int64)
        encoded, documents = [], []
        for row, sample in enumerate(samples):
            inner = sample.doc_starts[sample.doc_starts > 0]
            tokens = np.insert(sample.tokens, inner, self.eos)[: self.raw_length]  # </s> between documents
            labels[row] = np.concatenate([[self.bos], tokens, [self.eos]])
            infilled, source = self._infill(tokens, seeded_rng(self.seed, sample.index))
            encoded.append(np.concatenate([[self.bos], infilled, [self.eos]]))
            if self.doc_index:
                numbers = separated_documents(sample.doc_starts, len(sample.tokens), self.raw_length)
                documents.append(numbers[np.concatenate([[0], source, [len(tokens) - 1]])])
        width = max(len(enc) for enc in encoded)
        inputs = np.full((n, width), self.pad, dtype=np.int64)
        attention = np.zeros((n, width), dtype=np.int64)
        docs = np.zeros((n, width), dtype=np.int64)
        for row, enc in enumerate(encoded):
            inputs[row, :len(enc)] = enc
            attention[row, :len(enc)] = 1
            if self.doc_index:
                docs[row] = documents[row][-1]  # padding (never attended) as the last document
                docs[row, :len(enc)] = documents[row]
        # Teacher forcing: the decoder sees </s> (BART's decoder start) then the target shifted right.
        decoder_input_ids = np.concatenate([np.full((n, 1), self.eos), labels[:, :-1]], axis=1)
        labels = np.where(labels == self.pad, IGNORE, labels)
        out = {"input_ids": inputs, "attention_mask": attention, "decoder_input_ids": decoder_input_ids,
               "labels": labels}
        if self.doc_index:
            out["doc_index"] = docs
        return to_tensors(out)

    def _infill(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(the infilled tokens, the position in `tokens` each one stands for)."""
        n = len(tokens)
        target = round(n * self.cfg.mask_ratio)
        masked = np.zeros(n, dtype=bool)
        insert_before = np.zeros(n + 1, dtype=bool)
        covered = 0
        while covered < target:
            length = int(rng.poisson(self.cfg.poisson_lambda))
            start = int(rng.integers(0, n))
            if length == 0:
                insert_before[start] = True
                covered += 1  # counts towards the budget so the loop ends on degenerate draws
                continue
            end = min(n, start + length)
            covered += int((~masked[start:end]).sum())
            masked[start:end] = True
        out, source = [], []
        for i in range(n):
            if insert_before[i]:
                out.append(self.mask)
                source.append(i)
            if masked[i]:
                if i == 0 or not masked[i - 1]:
                    out.append(self.mask)  # one <mask> per run of masked tokens
                    source.append(i)
            else:
                out.append(tokens[i])
                source.append(i)
        if insert_before[n]:
            out.append(self.mask)
            source.append(n - 1)
        return np.asarray(out, dtype=np.int64), np.asarray(source, dtype=np.int64)
