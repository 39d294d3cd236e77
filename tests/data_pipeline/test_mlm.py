"""The MLM collator: row layout, which positions get labels, the 80/10/10 corruption, and determinism."""

import math

import numpy as np
import pytest
import torch

from data_pipeline.collators.mlm import IGNORE, MLMCollator, MLMConfig
from data_pipeline.errors import UserError
from data_pipeline.packing import Segment, SegmentBatch

SPECIALS = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
CLS, SEP, MASK = 2, 3, 4
VOCAB = 1000


def make_collator(seq_len=32, seed=0, **cfg):
    return MLMCollator(MLMConfig(**cfg), SPECIALS, vocab_size=VOCAB, seq_len=seq_len, seed=seed)


def make_segment(index, length, doc_starts=(0,), rng_seed=None):
    rng = np.random.default_rng(index if rng_seed is None else rng_seed)
    tokens = rng.integers(5, VOCAB, size=length)  # never a special id, so specials in the row are ours
    return Segment(index=index, tokens=tokens, doc_starts=np.array(doc_starts, dtype=np.int64))


def expected_row(segment, seq_len):
    """[CLS] + tokens with [SEP] before every inner document start, cut to fit, + [SEP]; built by hand."""
    starts = set(int(s) for s in segment.doc_starts if s > 0)
    body = []
    for i, t in enumerate(segment.tokens.tolist()):
        if i in starts:
            body.append(SEP)
        body.append(t)
    return [CLS] + body[:seq_len - 2] + [SEP]


def one(collator, segment):
    out = collator(SegmentBatch.of([segment]))
    return out["input_ids"][0].numpy(), out["labels"][0].numpy()


def original_ids(inputs, labels):
    return np.where(labels != IGNORE, labels, inputs)


@pytest.mark.parametrize("doc_starts", [(0,), (), (0, 7, 19), (3,), (0, 1, 2), (0, 29), (0, 28), (0, 15, 16, 17)])
def test_row_layout(doc_starts):
    seq_len = 32
    collator = make_collator(seq_len)
    assert collator.raw_length == 30
    segment = make_segment(11, 30, doc_starts)
    out = collator(SegmentBatch.of([segment]))
    assert set(out) == {"input_ids", "labels"}
    assert out["input_ids"].shape == out["labels"].shape == (1, seq_len)
    assert out["input_ids"].dtype == out["labels"].dtype == torch.int64
    inputs, labels = out["input_ids"][0].numpy(), out["labels"][0].numpy()
    assert inputs[0] == CLS and inputs[-1] == SEP
    original = original_ids(inputs, labels)
    assert original.tolist() == expected_row(segment, seq_len)
    n_inner = sum(1 for s in doc_starts if s > 0)
    assert (original == SEP).sum() == 1 + n_inner  # the final [SEP] + one per inner boundary (all fit here)
    # Only selected positions differ from the uncorrupted row.
    assert np.all(inputs[labels == IGNORE] == original[labels == IGNORE])


def test_rows_with_different_boundaries_in_one_batch():
    """[SEP] insertion is vectorised over the batch: each row is laid out as if it were alone."""
    seq_len = 32
    collator = make_collator(seq_len)
    segs = [make_segment(i, 30, starts) for i, starts in
            enumerate([(0,), (0, 7, 19), (), (3,), (0, 1, 2), (0, 29), (0, 15, 16, 17), (0, 28)])]
    out = collator(SegmentBatch.of(segs))
    for row, segment in enumerate(segs):
        original = original_ids(out["input_ids"][row].numpy(), out["labels"][row].numpy())
        assert original.tolist() == expected_row(segment, seq_len)
        inputs, labels = one(collator, segment)
        assert np.array_equal(out["input_ids"][row].numpy(), inputs)
        assert np.array_equal(out["labels"][row].numpy(), labels)


def test_boundaries_past_the_cut_are_dropped():
    # The inner [SEP] pushes the last token out, and with it the boundary before it (it would sit past the cut).
    segment = make_segment(3, 30, (0, 10, 29))
    inputs, labels = one(make_collator(32), segment)
    original = original_ids(inputs, labels)
    tokens = segment.tokens.tolist()
    assert original.tolist() == [CLS] + tokens[:10] + [SEP] + tokens[10:29] + [SEP]
    assert len(original) == 32


@pytest.mark.parametrize("mask_prob", [0.15, 0.5, 0.9, 0.01])
@pytest.mark.parametrize("doc_starts", [(0,), (0, 5, 9, 20)])
def test_selected_positions(mask_prob, doc_starts):
    seq_len = 48
    collator = make_collator(seq_len, seed=7, mask_prob=mask_prob)
    for index in range(40):
        segment = make_segment(index, seq_len - 2, doc_starts)
        inputs, labels = one(collator, segment)
        original = np.array(expected_row(segment, seq_len))
        selected = labels != IGNORE
        candidates = int(((original != CLS) & (original != SEP)).sum())
        assert candidates == seq_len - 2 - sum(1 for s in doc_starts if s > 0)
        assert selected.sum() == max(1, round(mask_prob * candidates))
        assert np.all(labels[selected] == original[selected])
        assert not np.any(selected[(original == CLS) | (original == SEP)])
        assert not selected[0] and not selected[-1]
        assert np.all(inputs[~selected] == original[~selected])
        corrupted = inputs[selected]
        assert np.all((corrupted >= 0) & (corrupted < VOCAB))


def split_counts(collator, n_samples, seq_len):
    batch = [make_segment(i, seq_len - 2, (0, 17)) for i in range(n_samples)]
    out = collator(SegmentBatch.of(batch))
    inputs, labels = out["input_ids"].numpy(), out["labels"].numpy()
    selected = labels != IGNORE
    chosen_in, chosen_orig = inputs[selected], labels[selected]
    masked = int((chosen_in == MASK).sum())
    unchanged = int((chosen_in == chosen_orig).sum())
    random = int(((chosen_in != MASK) & (chosen_in != chosen_orig)).sum())
    return masked, random, unchanged, chosen_in[(chosen_in != MASK) & (chosen_in != chosen_orig)]


@pytest.mark.parametrize("p_mask,p_random", [(0.8, 0.1), (0.5, 0.3), (0.0, 1.0), (1.0, 0.0)])
def test_corruption_split_matches_config(p_mask, p_random):
    seq_len, n_samples = 64, 1500
    collator = make_collator(seq_len, seed=3, replace_with_mask=p_mask, replace_with_random=p_random)
    masked, random, unchanged, random_ids = split_counts(collator, n_samples, seq_len)
    total = masked + random + unchanged
    assert total == n_samples * round(0.15 * (seq_len - 3))
    # A random replacement may draw [MASK] or the original token (1 / VOCAB each): count them where they land.
    expected = {"masked": p_mask + p_random / VOCAB,
                "random": p_random * (1 - 2 / VOCAB),
                "unchanged": (1 - p_mask - p_random) + p_random / VOCAB}
    observed = {"masked": masked, "random": random, "unchanged": unchanged}
    for key, p in expected.items():
        sigma = math.sqrt(total * p * (1 - p))
        assert abs(observed[key] - total * p) <= 5 * sigma + 1e-9, (key, observed[key], total * p, sigma)
    if p_random:
        # Random tokens come from the whole vocabulary, not a narrow slice of it.
        assert random_ids.min() < VOCAB // 10 and random_ids.max() >= VOCAB - VOCAB // 10
        assert len(np.unique(random_ids)) > min(len(random_ids), VOCAB) // 3


def test_same_sample_same_output_in_any_batch():
    collator = make_collator(40, seed=5)
    segs = [make_segment(i, 38, (0, 9)) for i in (100, 101, 102, 103)]
    alone = {s.index: one(collator, s) for s in segs}
    for batch in ([segs[0], segs[1], segs[2], segs[3]], [segs[3], segs[1]], [segs[2], segs[0], segs[3]]):
        out = collator(SegmentBatch.of(batch))
        for row, s in enumerate(batch):
            assert np.array_equal(out["input_ids"][row].numpy(), alone[s.index][0])
            assert np.array_equal(out["labels"][row].numpy(), alone[s.index][1])
    # A fresh collator with the same seed (e.g. another rank, or after resume) agrees too.
    again = make_collator(40, seed=5)
    for s in segs:
        inputs, labels = one(again, s)
        assert np.array_equal(inputs, alone[s.index][0]) and np.array_equal(labels, alone[s.index][1])


def test_other_index_or_seed_gives_other_mask():
    seq_len = 128
    tokens_seed = 42  # identical tokens, only the index or the seed differs
    base = one(make_collator(seq_len, seed=5), make_segment(7, seq_len - 2, rng_seed=tokens_seed))
    other_index = one(make_collator(seq_len, seed=5), make_segment(8, seq_len - 2, rng_seed=tokens_seed))
    other_seed = one(make_collator(seq_len, seed=6), make_segment(7, seq_len - 2, rng_seed=tokens_seed))
    for inputs, labels in (other_index, other_seed):
        assert np.array_equal(original_ids(inputs, labels), original_ids(*base))  # same underlying row
        assert not np.array_equal(labels != IGNORE, base[1] != IGNORE)  # but other positions selected


@pytest.mark.parametrize("kwargs,key", [
    ({"mask_prob": 0.0}, "objective.mlm.mask_prob"),
    ({"mask_prob": 1.0}, "objective.mlm.mask_prob"),
    ({"mask_prob": -0.1}, "objective.mlm.mask_prob"),
    ({"mask_prob": 1.5}, "objective.mlm.mask_prob"),
    ({"mask_prob": float("nan")}, "objective.mlm.mask_prob"),
    ({"replace_with_mask": -0.1}, "replace_with_mask"),
    ({"replace_with_mask": 1.1, "replace_with_random": 0.0}, "replace_with_mask"),
    ({"replace_with_random": -0.01}, "replace_with_random"),
    ({"replace_with_mask": 0.9, "replace_with_random": 0.2}, "replace_with_random"),
    ({"replace_with_mask": float("nan")}, "replace_with_mask"),
    ({"replace_with_random": float("nan")}, "replace_with_random"),
])
def test_config_rejects_bad_probabilities(kwargs, key):
    with pytest.raises(UserError, match=key):
        MLMConfig(**kwargs)


def test_config_accepts_edges():
    MLMConfig(mask_prob=0.5, replace_with_mask=1.0, replace_with_random=0.0)
    MLMConfig(mask_prob=0.01, replace_with_mask=0.0, replace_with_random=0.0)
    MLMConfig(replace_with_mask=0.7, replace_with_random=0.3)
