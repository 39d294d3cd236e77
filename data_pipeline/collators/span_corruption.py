"""T5's span corruption: random spans (mean length 3, 15% of tokens) become sentinels in the input; the
target lists each sentinel followed by the tokens it replaced, then </s>.

The raw length is chosen, as T5 does, so the corrupted input fills seq_len exactly; every row has the same
number of noise tokens and spans, so inputs and targets need no padding. For recurrent models (`doc_index`)
each input position also carries its document's number within the segment: a sentinel that of the first
token it replaces, the final </s> that of the last token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_pipeline.collators.boundaries import separated_documents
from data_pipeline.errors import UserError
from data_pipeline.loader import seeded_rng, to_tensors
from data_pipeline.packing import Segment, SegmentBatch


@dataclass
class SpanCorruptionConfig:
    noise_density: float = 0.15  # share of tokens replaced by sentinels (T5's 15%)
    mean_span_length: float = 3.0  # mean length of a corrupted span, in tokens

    def __post_init__(self):
        if not 0 < self.noise_density < 1:
            raise UserError(f"objective.span.noise_density must be in (0, 1), got {self.noise_density}")
        if not self.mean_span_length >= 1:
            raise UserError(f"objective.span.mean_span_length must be >= 1, got {self.mean_span_length}")


def _counts(raw: int, cfg: SpanCorruptionConfig) -> tuple[int, int]:
    noise = min(max(1, round(raw * cfg.noise_density)), raw - 1)
    return noise, max(1, round(noise / cfg.mean_span_length))


def _segments(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """n items split into k non-empty runs, uniformly at random."""
    cuts = np.sort(rng.choice(np.arange(1, n), size=k - 1, replace=False)) if k > 1 else np.array([], dtype=np.int64)
    return np.diff(np.concatenate([[0], cuts, [n]]))


class SpanCorruptionCollator:
    def __init__(self, cfg: SpanCorruptionConfig, special_tokens: dict[str, int], seq_len: int, seed: int,
                 doc_index: bool = False):
        """`doc_index`: also emit, for recurrent models, the documents begun at or before each input position."""
        if "sentinel_0" not in special_tokens:
            raise UserError("span corruption needs T5's sentinel tokens; prepare the data with "
                            "`graft prepare --tokenizer-kind unigram`")
        self.cfg, self.seq_len, self.seed, self.doc_index = cfg, seq_len, seed, doc_index
        self.eos, self.pad, self.sentinel_0 = special_tokens["eos"], special_tokens["pad"], special_tokens["sentinel_0"]
        self.max_sentinels = special_tokens["sentinel_0"] - special_tokens["sentinel_99"] + 1
        raw = 2 * seq_len
        while raw > 2 and self._input_length(raw) > seq_len:  # the longest raw span whose input fits
            raw -= 1
        self.raw_length = raw
        self.noise, self.spans = _counts(raw, cfg)
        if self.spans > self.max_sentinels:
            raise UserError(f"data.seq_len {seq_len} needs {self.spans} sentinels, the tokenizer has "
                            f"{self.max_sentinels}; use a shorter sequence or longer spans")
        self.target_length = self.noise + self.spans + 1

    def _input_length(self, raw: int) -> int:
        noise, spans = _counts(raw, self.cfg)
        return raw - noise + spans + 1  # + </s>

    def __call__(self, batch: SegmentBatch) -> dict:
        samples = batch.segments()  # spans are drawn per sample
        n = len(samples)
        inputs = np.full((n, self.seq_len), self.pad, dtype=np.int64)
        mask = np.zeros((n, self.seq_len), dtype=np.int64)
        labels = np.empty((n, self.target_length), dtype=np.int64)
        docs = np.zeros((n, self.seq_len), dtype=np.int64)
        for row, sample in enumerate(samples):
            enc, labels[row], source = self._one(sample)
            inputs[row, :len(enc)] = enc
            mask[row, :len(enc)] = 1
            if self.doc_index:
                numbers = separated_documents(sample.doc_starts, len(sample.tokens), self.raw_length)
                docs[row] = numbers[-1]  # padding (never attended) as the last document
                docs[row, :len(enc)] = numbers[source]
        decoder_input_ids = np.concatenate([np.full((n, 1), self.pad), labels[:, :-1]], axis=1)  # start = pad
        out = {"input_ids": inputs, "attention_mask": mask, "decoder_input_ids": decoder_input_ids, "labels": labels}
        if self.doc_index:
            out["doc_index"] = docs
        return to_tensors(out)

    def _one(self, sample: Segment) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(input, target, the token of the segment's layout each input position stands for)."""
        inner = sample.doc_starts[sample.doc_starts > 0]
        tokens = np.insert(sample.tokens, inner, self.eos)[: self.raw_length]  # </s> between documents
        rng = seeded_rng(self.seed, sample.index)
        noise_runs = _segments(self.noise, self.spans, rng)
        keep_runs = _segments(len(tokens) - self.noise, self.spans, rng)
        enc, dec, source, pos = [], [], [], 0
        for i, (keep, noise) in enumerate(zip(keep_runs, noise_runs, strict=True)):
            sentinel = self.sentinel_0 - i  # T5's order: <extra_id_0> has the highest id
            enc += [*tokens[pos:pos + keep], sentinel]
            source += [*range(pos, pos + keep + 1)]  # the sentinel stands for the first token it replaces
            dec += [sentinel, *tokens[pos + keep:pos + keep + noise]]
            pos += keep + noise
        return np.asarray(enc + [self.eos]), np.asarray(dec + [self.eos]), np.asarray(source + [len(tokens) - 1])
