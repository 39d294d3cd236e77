"""BART's five noises, in fairseq's DenoisingDataset order: sentence permutation, masking (token masking,
token deletion or text infilling, by `mask_length` and `replace_length`), insertion, document rotation.

Arithmetic, per row <s> body </s> (the first and last tokens are never noised):
- permute: of the row's S sentences (recorded sentence starts), ceil(S x permute_ratio) chosen ones are
  shuffled among their places.
- mask: ceil(mask_ratio x W) of the W word starts (every token is one for mask_length "subword"). With
  "span-poisson", span lengths (in words) are drawn from Poisson(poisson_lambda) truncated to [0, 128),
  until their sum reaches the budget; the last is cut to meet it exactly; length-0 spans become insertions.
  Spans start at distinct random word starts. A span's first token becomes <mask> (replace_length 1 or -1)
  or is deleted (0); the rest of the span is deleted (1, 0) or masked too (-1); each span's masks are a
  random token instead with probability random_ratio.
- insert: ceil(insert_ratio x len) new tokens at distinct random inner places, ceil(that x random_ratio) of
  them random tokens and the rest <mask>.
- rotate: with probability rotate_ratio the body is rotated to start at a random token.
The decoder's target is always the original row.

Output: input_ids, attention_mask [B, longest noised row]; decoder_input_ids, labels [B, seq_len].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from data_pipeline.collators.boundaries import body_sources, gather_body, noise_keys, require_boundaries
from data_pipeline.collators.mlm import IGNORE
from data_pipeline.errors import UserError
from data_pipeline.loader import seeded_rng, to_tensors
from data_pipeline.packing import SegmentBatch

MASK_LENGTHS = ("subword", "word", "span-poisson")
POISSON_CUTOFF = 128  # fairseq's truncation of the span length distribution


@dataclass
class BartNoiseConfig:
    mask_ratio: float = 0.3  # share of words (subword: tokens) masked
    random_ratio: float = 0.1  # share of masks that are a random token instead
    insert_ratio: float = 0.0  # extra tokens inserted, as a share of the row
    rotate_ratio: float = 0.0  # probability of rotating the document
    permute_ratio: float = 1.0  # share of sentences permuted
    poisson_lambda: float = 3.5  # span-poisson: mean span length, in words
    mask_length: str = "span-poisson"  # subword (token masking/deletion), word (whole words), span-poisson
    replace_length: int = 1  # a masked span becomes 1 <mask> (1), nothing (0), or one <mask> per token (-1)

    def __post_init__(self):
        for name in ("mask_ratio", "random_ratio", "insert_ratio", "rotate_ratio", "permute_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"objective.bart.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.mask_length not in MASK_LENGTHS:
            raise UserError(f"objective.bart.mask_length must be one of {', '.join(MASK_LENGTHS)}")
        if self.replace_length not in (-1, 0, 1):
            raise UserError(f"objective.bart.replace_length must be -1, 0 or 1, got {self.replace_length}")
        if not self.poisson_lambda > 0:
            raise UserError(f"objective.bart.poisson_lambda must be positive, got {self.poisson_lambda}")


def truncated_poisson(lam: float, cutoff: int = POISSON_CUTOFF) -> np.ndarray:
    """P(k) for k in [0, cutoff): Poisson(lam) renormalized there."""
    logp = np.array([k * math.log(lam) - lam - math.lgamma(k + 1) for k in range(cutoff)])
    p = np.exp(logp - logp.max())
    return p / p.sum()


def span_lengths(budget: int, lam: float, rng: np.random.Generator) -> np.ndarray:
    """fairseq's span lengths for a budget of `budget` words: truncated-Poisson draws until their sum reaches
    it, the last cut so the sum is exactly `budget` (zeros included: they become insertions)."""
    probs = truncated_poisson(lam)
    lengths = rng.choice(len(probs), size=budget, p=probs)
    while lengths.sum() < budget:
        lengths = np.concatenate([lengths, rng.choice(len(probs), size=budget, p=probs)])
    cum = np.cumsum(lengths)
    last = int(np.searchsorted(cum, budget))  # the first span reaching the budget
    lengths = lengths[:last + 1].copy()
    lengths[last] = budget - (cum[last - 1] if last else 0)
    return lengths


def permute_sentences(row: np.ndarray, words: np.ndarray, sentences: np.ndarray, ratio: float,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(row, word starts) with ceil(S x ratio) of the body's S sentences shuffled among their places."""
    starts = np.flatnonzero(sentences[1:-1]) + 1
    if not len(starts) or starts[0] != 1:
        starts = np.concatenate([[1], starts])
    bounds = np.append(starts, len(row) - 1)
    count = len(starts)
    chosen = rng.permutation(count)[:math.ceil(count * ratio)]
    order = np.arange(count)
    order[chosen] = chosen[rng.permutation(len(chosen))]
    pieces = [np.arange(bounds[s], bounds[s + 1]) for s in order]
    index = np.concatenate([[0], *pieces, [len(row) - 1]])
    return row[index], words[index]


def mask_spans(row: np.ndarray, words: np.ndarray, cfg: BartNoiseConfig, mask_id: int, vocab_size: int,
               rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """fairseq's whole-word masking of `row` (its first and last tokens kept); returns the noised row and the
    number of length-0 spans, which become insertions."""
    starts = words.copy()
    starts[0] = starts[-1] = False
    budget = math.ceil(starts.sum() * cfg.mask_ratio)
    if budget == 0:
        return row, 0
    if cfg.mask_length == "span-poisson":
        lengths = span_lengths(budget, cfg.poisson_lambda, rng)
        inserts = int((lengths == 0).sum())
        lengths = lengths[lengths > 0]
        if not len(lengths):
            return row, inserts
    else:
        lengths, inserts = np.ones(budget, dtype=np.int64), 0
    candidates = np.flatnonzero(starts)
    first = candidates[rng.permutation(len(candidates))[:len(lengths)]]
    lengths = lengths[:len(first)]
    random = rng.random(len(first)) < cfg.random_ratio
    out, keep = row.copy(), np.ones(len(row), dtype=bool)
    at_end = starts.astype(np.int64)
    at_end[-1] = 1 << 20  # a span stops at </s>

    def replace(positions, random_here):
        out[positions] = mask_id
        out[positions[random_here]] = rng.integers(1, vocab_size, int(random_here.sum()))

    if cfg.replace_length == 0:
        keep[first] = False
    else:
        replace(first, random)
    remaining, index = lengths - 1, first
    while len(index):
        remaining = remaining - at_end[index + 1]  # moving into a new word spends one of the span's words
        going = remaining >= 0
        index, remaining, random = index[going] + 1, remaining[going], random[going]
        if cfg.replace_length != -1:
            keep[index] = False
        else:
            replace(index, random)
    return out[keep], inserts


def insert_noise(row: np.ndarray, ratio: float, random_ratio: float, mask_id: int, vocab_size: int,
                 rng: np.random.Generator) -> np.ndarray:
    """ceil(ratio x len) new tokens at distinct places strictly inside the row."""
    count = math.ceil(len(row) * ratio)
    if ratio == 0 or count == 0:
        return row
    places = rng.permutation(len(row) + count - 2)[:count] + 1
    out = np.full(len(row) + count, -1, dtype=np.int64)
    randoms = math.ceil(count * random_ratio)
    out[places[randoms:]] = mask_id
    out[places[:randoms]] = rng.integers(1, vocab_size, randoms)
    filled = np.ones(len(out), dtype=bool)
    filled[places] = False
    out[filled] = row
    return out


def rotate(row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The body rotated to begin at a random token (offset 1 .. len - 2); <s> and </s> stay."""
    offset = int(rng.integers(1, max(1, len(row) - 1) + 1))
    return np.concatenate([row[:1], row[offset:-1], row[1:offset], row[-1:]])


def bart_noise(row: np.ndarray, words: np.ndarray, sentences: np.ndarray | None, cfg: BartNoiseConfig,
               mask_id: int, vocab_size: int, rng: np.random.Generator) -> np.ndarray:
    """All of BART's noise on one <s> body </s> row, in fairseq's order."""
    if cfg.permute_ratio > 0 and sentences is not None:
        row, words = permute_sentences(row, words, sentences, cfg.permute_ratio, rng)
    inserts = 0
    if cfg.mask_ratio > 0:
        row, inserts = mask_spans(row, words, cfg, mask_id, vocab_size, rng)
    if inserts:
        row = insert_noise(row, inserts / len(row), cfg.random_ratio, mask_id, vocab_size, rng)
    if cfg.insert_ratio > 0:
        row = insert_noise(row, cfg.insert_ratio, cfg.random_ratio, mask_id, vocab_size, rng)
    if cfg.rotate_ratio > 0 and rng.random() < cfg.rotate_ratio:
        row = rotate(row, rng)
    return row


class BartNoiseCollator:
    def __init__(self, cfg: BartNoiseConfig, special_tokens: dict[str, int], vocab_size: int, seq_len: int,
                 seed: int):
        if "bos" not in special_tokens or "mask" not in special_tokens:
            raise UserError("BART's noise needs <s> </s> <mask>; prepare the data with "
                            "`graft prepare --tokenizer-kind bytelevel_bpe`")
        self.cfg, self.seq_len, self.seed, self.vocab_size = cfg, seq_len, seed, vocab_size
        self.bos, self.eos = special_tokens["bos"], special_tokens["eos"]
        self.pad, self.mask = special_tokens["pad"], special_tokens["mask"]

    @property
    def raw_length(self) -> int:
        return self.seq_len - 2

    @property
    def needs_boundaries(self) -> bool:
        return self.cfg.mask_length != "subword" or self.cfg.permute_ratio > 0

    def __call__(self, batch: SegmentBatch) -> dict:
        if self.needs_boundaries:
            require_boundaries(batch, "bart (word masking or sentence permutation)")
        n, width = len(batch), self.raw_length
        src = body_sources(batch.doc_start, width)
        rows = np.empty((n, self.seq_len), dtype=np.int64)
        rows[:, 0], rows[:, 1:-1], rows[:, -1] = self.bos, gather_body(batch.tokens[:, :width], src, self.eos), self.eos
        words = np.ones((n, self.seq_len), dtype=bool)
        sentences = None
        if batch.word_start is not None:
            words[:, 1:-1] = gather_body(batch.word_start[:, :width], src, True)
            sentences = np.ones((n, self.seq_len), dtype=bool)
            sentences[:, 1:-1] = gather_body(batch.sentence_start[:, :width], src, True)
        if self.cfg.mask_length == "subword":
            words[:] = True
        encoded = [bart_noise(rows[r], words[r], None if sentences is None else sentences[r], self.cfg, self.mask,
                              self.vocab_size, seeded_rng(self.seed, int(k)))
                   for r, k in enumerate(noise_keys(batch, False))]
        longest = max(len(e) for e in encoded)
        inputs = np.full((n, longest), self.pad, dtype=np.int64)
        attention = np.zeros((n, longest), dtype=np.int64)
        for r, e in enumerate(encoded):
            inputs[r, :len(e)], attention[r, :len(e)] = e, 1
        decoder_inputs = np.concatenate([np.full((n, 1), self.eos), rows[:, :-1]], axis=1)  # BART starts with </s>
        labels = np.where(rows == self.pad, IGNORE, rows)
        return to_tensors({"input_ids": inputs, "attention_mask": attention, "decoder_input_ids": decoder_inputs,
                           "labels": labels})
