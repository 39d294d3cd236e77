"""Span corruption (T5), text infilling (BART) and the NSP/SOP pair collator: shapes, reconstruction, determinism."""

import numpy as np
import torch
import pytest

from data_pipeline.collators.mlm import IGNORE, MLMConfig
from data_pipeline.collators.sentence_pair import SentencePairCollator
from data_pipeline.collators.span_corruption import SpanCorruptionCollator, SpanCorruptionConfig
from data_pipeline.collators.text_infilling import InfillingConfig, TextInfillingCollator
from data_pipeline.errors import UserError
from data_pipeline.packing import Segment, SegmentBatch

T5_IDS = {"pad": 0, "eos": 1, "unk": 2, "sentinel_0": 999, "sentinel_99": 900}
BART_IDS = {"bos": 0, "pad": 1, "eos": 2, "unk": 3, "mask": 4, "cls": 0, "sep": 2}
BERT_IDS = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}


def segments(length, n=4, docs=(0,)):
    return SegmentBatch.of([Segment(index=i, tokens=np.arange(10, 10 + length) + 100 * i, doc_starts=np.array(docs))
                            for i in range(n)])


def test_span_corruption_round_trips_and_fills_the_row():
    c = SpanCorruptionCollator(SpanCorruptionConfig(), T5_IDS, seq_len=64, seed=0)
    batch = c(segments(c.raw_length))
    assert batch["input_ids"].shape == (4, 64) and batch["labels"].shape == (4, c.target_length)
    assert int(batch["attention_mask"].sum(1).min()) >= 62  # the raw length is chosen to fill seq_len
    for row in range(4):
        enc = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
        dec = batch["labels"][row].tolist()
        assert enc[-1] == 1 and dec[-1] == 1
        assert enc.count(999) == 1 and dec[0] == 999  # <extra_id_0> first, in both
        # Filling each sentinel of the input with its span from the target restores the original.
        spans, current = {}, None
        for t in dec[:-1]:
            if t >= 900:
                current = t
                spans[t] = []
            else:
                spans[current].append(t)
        restored = [x for t in enc[:-1] for x in (spans[t] if t >= 900 else [t])]
        assert restored == list(range(10 + 100 * row, 10 + 100 * row + c.raw_length))
    np.testing.assert_array_equal(batch["decoder_input_ids"][:, 1:], batch["labels"][:, :-1])
    assert (batch["decoder_input_ids"][:, 0] == 0).all()
    again = c(segments(c.raw_length))
    np.testing.assert_array_equal(again["input_ids"], batch["input_ids"])  # a function of (seed, index)


def test_span_corruption_needs_sentinels():
    with pytest.raises(UserError, match="unigram"):
        SpanCorruptionCollator(SpanCorruptionConfig(), BART_IDS, 64, 0)


def test_text_infilling_masks_about_30_percent_in_spans():
    c = TextInfillingCollator(InfillingConfig(), BART_IDS, seq_len=128, seed=0)
    batch = c(segments(c.raw_length))
    labels, inputs = batch["labels"], batch["input_ids"]
    assert labels.shape == (4, 128)
    # The encoder input is as wide as its longest row: infilling shortened every row, so no pad-only columns.
    lengths = batch["attention_mask"].sum(1)
    assert inputs.shape == batch["attention_mask"].shape == (4, lengths.max()) and lengths.max() < 128
    assert (labels[:, 0] == 0).all() and (labels[:, -1] == 2).all()
    np.testing.assert_array_equal(batch["decoder_input_ids"][:, 1:], labels[:, :-1])
    assert (batch["decoder_input_ids"][:, 0] == 2).all()  # BART's decoder start is </s>
    for row in range(4):
        enc = inputs[row][batch["attention_mask"][row].bool()].tolist()
        assert enc[0] == 0 and enc[-1] == 2 and 4 in enc
        kept = [t for t in enc[1:-1] if t != 4]
        assert kept == [t for t in labels[row, 1:-1].tolist() if t in set(kept)]  # order preserved
        removed = c.raw_length - len(kept)
        assert 0.2 * c.raw_length <= removed <= 0.45 * c.raw_length
        assert enc.count(4) < removed  # spans: fewer masks than masked tokens


@pytest.mark.parametrize("starts, numbers", [((20,), [0, 1]), ((0, 20), [1, 2])])
@pytest.mark.parametrize("kind", ["span_corruption", "text_infilling"])
def test_seq2seq_collators_mark_documents_for_recurrent_models(kind, starts, numbers):
    """doc_index: each input position's document within the segment (0: the one open from the lane's previous
    segment), so that a recurrent encoder masks a finished document's memory."""
    def make(**kw):
        if kind == "span_corruption":
            return SpanCorruptionCollator(SpanCorruptionConfig(), T5_IDS, seq_len=64, seed=0, **kw)
        return TextInfillingCollator(InfillingConfig(), BART_IDS, seq_len=64, seed=0, **kw)
    c = make(doc_index=True)
    batch = c(segments(c.raw_length, docs=starts))
    plain = make()(segments(c.raw_length, docs=starts))
    assert set(batch) - set(plain) == {"doc_index"}
    assert all(torch.equal(batch[k], plain[k]) for k in plain)  # the rest is unchanged
    docs, ids, mask = batch["doc_index"], batch["input_ids"], batch["attention_mask"].bool()
    assert docs.shape == ids.shape
    for row in range(4):
        ordinary = mask[row] & (ids[row] >= 10) & (ids[row] < 900)  # the segment's own tokens, not specials
        position = ids[row][ordinary] - 10 - 100 * row  # the token ids count the positions
        expected = sum((position >= s).long() for s in starts)
        assert torch.equal(docs[row][ordinary], expected)
        assert (docs[row].diff() >= 0).all()  # sentinels, masks, </s> and padding go with a neighbour
    assert docs.unique().tolist() == numbers


def test_sentence_pair_rows_and_labels():
    for task in ("sop", "nsp"):
        c = SentencePairCollator(MLMConfig(), BERT_IDS, vocab_size=2000, seq_len=32, seed=0, task=task)
        rows = segments(c.raw_length, n=16)
        # The loader reads a random other segment per row for NSP; here row i's partner is segment 15 - i.
        rows.partner = SegmentBatch.of([Segment(index=i, tokens=np.arange(10, 10 + c.raw_length) + 100 * (15 - i),
                                                doc_starts=np.array([0])) for i in range(16)])
        partners = c.bodies(rows.partner)
        batch = c(rows)
        ids, types = batch["input_ids"], batch["token_type_ids"]
        assert ids.shape == (16, 32) and (ids[:, 0] == 2).all()
        assert ((batch["labels"] == IGNORE) | (batch["labels"] >= 10)).all()
        assert set(batch["pair_labels"].tolist()) == {0, 1}
        bodies = c.bodies(segments(c.raw_length, n=16))
        # The row before masking: a masked position's label is its original token.
        unmasked = torch.where(batch["labels"] != IGNORE, batch["labels"], ids).numpy()
        for row in range(16):
            seps = np.flatnonzero(ids[row].numpy() == 3)
            assert len(seps) == 2 and seps[-1] == 31
            assert (types[row, :seps[0] + 1] == 0).all() and (types[row, seps[0] + 1:] == 1).all()
            a, b, body = unmasked[row, 1:seps[0]], unmasked[row, seps[0] + 1:seps[1]], bodies[row]
            assert len(a) and len(b)
            if batch["pair_labels"][row] == 0:  # the segment in order, cut in two
                assert np.array_equal(np.concatenate([a, b]), body)
            elif task == "sop":  # the same two halves, swapped
                assert np.array_equal(np.concatenate([b, a]), body)
            else:  # NSP: the segment's start, then as many consecutive tokens of its partner segment
                assert np.array_equal(a, body[:len(a)])
                other = partners[row]
                assert any(np.array_equal(b, other[i:i + len(b)]) for i in range(len(other) - len(b) + 1))
                assert not set(b.tolist()) & set(body.tolist())
