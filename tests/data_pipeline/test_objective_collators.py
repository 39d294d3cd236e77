"""The objectives' noise, checked against the arithmetic of their references: T5, SpanBERT, fairseq's BART,
BERT/HF masking, HF's whole-word grouping and permutation masks, UniLM, MASS; and that every collator's noise
for sample i depends on (seed, i) alone."""

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from data_pipeline.collators.bart_noise import (BartNoiseCollator, BartNoiseConfig, bart_noise, span_lengths,
                                                truncated_poisson)
from data_pipeline.collators.boundaries import body_sources, gather_body
from data_pipeline.collators.contrastive import ContrastiveViewsCollator
from data_pipeline.collators.masked_lm import MaskedLMCollator, MaskingConfig, _spans, span_length_distribution
from data_pipeline.collators.mass import MassCollator, MassConfig
from data_pipeline.collators.mlm import IGNORE, MLMConfig
from data_pipeline.collators.permutation_lm import PermutationLMCollator, PermutationLMConfig, _Lemire, select_targets
from data_pipeline.collators.prefix_lm import PrefixLMCollator
from data_pipeline.collators.sentence_pair import SentencePairCollator
from data_pipeline.collators.span_corruption import SpanCorruptionCollator, SpanCorruptionConfig
from data_pipeline.collators.structbert import StructBERTCollator, StructBERTConfig
from data_pipeline.collators.tlm import TLMCollator
from data_pipeline.collators.unilm import UniLMCollator, UniLMConfig, unilm_mask
from data_pipeline.errors import UserError
from data_pipeline.loader import partner_segments, seeded_rng
from data_pipeline.packing import SegmentBatch
from data_pipeline.prepare import prepare
from data_pipeline.sentences import word_and_sentence_flags
from data_pipeline.sample_corpus import SAMPLE_CORPUS
from data_pipeline.shards import Manifest
from data_pipeline.tokenizer import load_tokenizer
from pretrain.objectives import OBJECTIVES, ObjectiveConfig, build_objective
from pretrain.objectives.base import CollatorContext
from segment_batches import read, rows_of

CORPUS = SAMPLE_CORPUS
KINDS = ("wordpiece", "bytelevel_bpe", "unigram")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """A format-2 dataset per tokenizer kind, from the first 400 documents of the sample corpus."""
    root = tmp_path_factory.mktemp("objective_data")
    small = root / "small.jsonl"
    with open(CORPUS) as f:
        small.write_text("".join(line for _, line in zip(range(400), f, strict=False)))
    out = {}
    for kind in KINDS:
        prepare([small], root / kind, vocab_size=1500, tokenizer_kind=kind, progress=False)
        out[kind] = root / kind
    return out


def mlm_ids(manifest):
    """Special ids for MLM: a T5 vocabulary has no [MASK]/[CLS]/[SEP], so <extra_id_0> and </s> stand in."""
    ids = manifest.special_tokens
    return ids if "mask" in ids else {**ids, "cls": ids["eos"], "sep": ids["eos"], "mask": ids["sentinel_0"]}


# ---- format 2 and its errors -------------------------------------------------------------------------------

def test_prepare_writes_format_2_boundaries(datasets):
    for kind in KINDS:
        manifest, batch = read(datasets[kind], 200)
        assert manifest.format_version == 2 and manifest.has_boundaries
        assert batch.word_start is not None and batch.sentence_start is not None
        assert not (batch.sentence_start & ~batch.word_start).any()  # a sentence starts on a word
        assert (batch.word_start[batch.doc_start]).all() and (batch.sentence_start[batch.doc_start]).all()
        assert 0.01 < batch.sentence_start.mean() < 0.2 < batch.word_start.mean() < 0.95


def test_word_starts_refine_hf_word_grouping_and_match_bert_pieces(datasets):
    """Each word start of HF's whole-word grouping (a new word after a gap in the offsets) is one of ours; ours
    also split off punctuation, as BERT's "##" rule does (checked exactly for WordPiece)."""
    for kind in KINDS:
        tok = load_tokenizer(datasets[kind] / "tokenizer.json")
        text = json.loads(open(CORPUS).readline())["text"]
        enc = tok.encode(text, add_special_tokens=False)
        ours = (word_and_sentence_flags(enc.word_ids, enc.offsets, text) & 1).astype(bool)
        starts, ends = np.array(enc.offsets).T
        hf = np.ones(len(starts), dtype=bool)
        hf[1:] = starts[1:] != ends[:-1]
        assert not (hf & ~ours).any(), kind
        if kind == "wordpiece":
            np.testing.assert_array_equal(ours, [not t.startswith("##") for t in enc.tokens])


def test_format_1_dataset_trains_token_objectives_and_refuses_word_ones(datasets, tmp_path):
    manifest, batch = read(datasets["wordpiece"], 126)
    v1 = SegmentBatch(batch.indices, batch.tokens, batch.doc_start)  # what a format-1 dataset gives
    ids = manifest.special_tokens
    assert MaskedLMCollator(MaskingConfig(), ids, manifest.vocab_size, 128, 0)(v1)["input_ids"].shape == (16, 128)
    with pytest.raises(UserError, match="re-run `graft prepare`"):
        MaskedLMCollator(MaskingConfig(unit="whole_word"), ids, manifest.vocab_size, 128, 0)(v1)
    with pytest.raises(UserError, match="parallel text"):
        TLMCollator(MLMConfig(), ids, manifest.vocab_size, 128, 0)(batch)


def test_parallel_prepare_keeps_pairs_and_languages(tmp_path):
    records = [{"src": f"The cat number {i} sleeps.", "tgt": f"Le chat {i} dort.", "l1": "en",
                "l2": "fr" if i % 3 else "de"} for i in range(120)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    prepare([path], tmp_path / "par", vocab_size=400, progress=False, pair_fields=("src", "tgt"),
            language_fields=("l1", "l2"))
    manifest = Manifest.load(tmp_path / "par")
    assert manifest.languages == ["en", "de", "fr"] and manifest.total_documents == 120
    _, batch = read(tmp_path / "par", 40, rows=4)
    c = TLMCollator(MLMConfig(), manifest.special_tokens, manifest.vocab_size, 40, 0)
    out = c(batch)
    sep = manifest.special_tokens["sep"]
    for r in range(4):
        ids, pos = out["input_ids"][r].numpy(), out["position_ids"][r].numpy()
        restart = np.flatnonzero(pos == 0)
        assert restart[0] == 0 and all(ids[i] == sep or out["labels"][r, i] == sep for i in restart[1:])
    # The second side's tokens carry its language: some French (2) or German (1) tokens in every row.
    assert all(set(out["token_type_ids"][r].tolist()) & {1, 2} for r in range(4))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"src": "a", "l1": "en", "l2": "fr"}) + "\n")
    with pytest.raises(UserError, match="bad.jsonl:1.*--pair-fields"):
        prepare([bad], tmp_path / "bad", vocab_size=300, progress=False, pair_fields=("src", "tgt"),
                language_fields=("l1", "l2"))


# ---- T5 --------------------------------------------------------------------------------------------------

def t5_random_spans_helper(inputs_length, noise_density=0.15, mean_noise_span_length=3.0):
    """T5's preprocessors.random_spans_helper, restated from its definition."""
    def lengths(tokens_length):
        noise = int(round(tokens_length * noise_density))
        spans = int(round(noise / mean_noise_span_length))
        return tokens_length - noise + spans + 1, noise + spans + 1
    tokens_length = inputs_length - 1
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    return tokens_length, lengths(tokens_length)[1]


@pytest.mark.parametrize("seq_len", [32, 64, 100, 128, 256, 512, 568, 1000, 1024])
def test_t5_lengths(seq_len):
    ids = {"pad": 0, "eos": 1, "unk": 2, "sentinel_0": 5099, "sentinel_99": 5000}
    c = SpanCorruptionCollator(SpanCorruptionConfig(), ids, seq_len, 0)
    assert (c.raw_length, c.target_length) == t5_random_spans_helper(seq_len)
    if seq_len == 512:
        assert (c.raw_length, c.target_length) == (568, 114)


def test_prefix_lm_split():
    ids = {"pad": 0, "eos": 1}
    c = PrefixLMCollator(ids, 64, 3)
    tokens = np.arange(10, 10 + c.raw_length)[None].repeat(200, 0)
    out = c(SegmentBatch(np.arange(200), tokens, np.zeros_like(tokens, dtype=bool) | (np.arange(c.raw_length) == 0)))
    cuts = out["attention_mask"].sum(1).numpy() - 1
    assert cuts.min() >= 1 and cuts.max() <= c.raw_length - 1 and len(set(cuts)) > 30  # uniform in [1, n - 1]
    for r in range(200):
        enc = out["input_ids"][r, :cuts[r]].numpy()
        dec = out["labels"][r][out["labels"][r] != IGNORE].numpy()
        np.testing.assert_array_equal(np.concatenate([enc, dec[:-1]]), tokens[r])


# ---- SpanBERT ---------------------------------------------------------------------------------------------

def test_spanbert_budget_exact_and_whole_words(datasets):
    for kind in KINDS:
        manifest, batch = read(datasets[kind], 254, rows=24)
        c = MaskedLMCollator(MaskingConfig(unit="span", sbo=True), mlm_ids(manifest), manifest.vocab_size, 256, 0)
        out = c(batch)
        ids, words = c.rows(batch)
        specials = np.isin(ids, [c.cls, c.sep])
        labels = out["labels"].numpy()
        for r in range(len(ids)):
            assert (labels[r] != IGNORE).sum() == math.ceil((~specials[r]).sum() * 0.15)
            masked = labels[r] != IGNORE
            # Whole words, but for at most one word (the last span stops where the budget is met).
            word_of = np.cumsum(words[r]) - 1
            split = [w for w in np.unique(word_of[masked]) if not masked[(word_of == w) & ~specials[r]].all()]
            assert len(split) <= 1, kind
            where = np.flatnonzero(masked)
            left, right = out["sbo_left"][r].numpy()[where], out["sbo_right"][r].numpy()[where]
            assert (left < where).all() and (right > where).all()
            assert (out["sbo_position"][r].numpy()[where] == where - left).all()


def test_spanbert_span_lengths_follow_the_clipped_geometric():
    rng = np.random.default_rng(0)
    n = 4000
    starts, ends = np.arange(n), np.arange(1, n + 1)
    counts = np.zeros(11)
    cfg = MaskingConfig(unit="span")
    for _ in range(20):
        spans = _spans(starts, ends, n, cfg, rng, np.ones(n, dtype=bool))
        for a, b in spans[:-1]:  # the last one stops at the budget
            counts[b - a] += 1
    expected = span_length_distribution(0.2, 10) * counts.sum()
    # Spans that run into masked tokens still have their drawn length (they do not stop there).
    assert stats.chisquare(counts[1:], expected).pvalue > 1e-3


# ---- BART ------------------------------------------------------------------------------------------------

def test_bart_span_lengths_follow_the_truncated_poisson():
    rng = np.random.default_rng(1)
    lengths = np.concatenate([span_lengths(1000, 3.5, rng)[:-1] for _ in range(400)])
    assert len(lengths) >= 100_000
    probs = truncated_poisson(3.5)
    observed = np.bincount(lengths, minlength=len(probs))
    top = 12  # pool the tail so every expected count is large
    obs = np.append(observed[:top], observed[top:].sum())
    exp = np.append(probs[:top], probs[top:].sum()) * len(lengths)
    assert stats.chisquare(obs, exp).pvalue > 1e-3
    assert all(span_lengths(b, 3.5, rng).sum() == b for b in (1, 7, 50, 300))


def test_bart_replace_length_arithmetic():
    row = np.concatenate([[0], np.arange(10, 210), [2]])
    words = np.ones(len(row), dtype=bool)
    budget = math.ceil(200 * 0.3)
    for replace, expect_len, expect_masks in ((-1, len(row), budget), (0, len(row) - budget, 0),
                                              (1, len(row), budget)):
        cfg = BartNoiseConfig(mask_ratio=0.3, random_ratio=0.0, permute_ratio=0.0, mask_length="subword",
                              replace_length=replace)
        out = bart_noise(row, words, None, cfg, 4, 1000, np.random.default_rng(5))
        assert len(out) == expect_len and (out == 4).sum() == expect_masks
        assert out[0] == 0 and out[-1] == 2
    # Span infilling: spans of one <mask> each; with replace_length -1 the length is kept.
    cfg = BartNoiseConfig(mask_ratio=0.3, random_ratio=0.0, permute_ratio=0.0, replace_length=-1)
    out = bart_noise(row, words, None, cfg, 4, 1000, np.random.default_rng(6))
    inserted = len(out) - len(row)
    assert inserted >= 0 and (out == 4).sum() <= budget + inserted
    kept = out[out != 4]
    assert set(kept.tolist()) <= set(row.tolist())


def test_bart_target_is_the_original(datasets):
    manifest, batch = read(datasets["bytelevel_bpe"], 126)
    c = BartNoiseCollator(BartNoiseConfig(insert_ratio=0.1, rotate_ratio=0.5), manifest.special_tokens,
                          manifest.vocab_size, 128, 0)
    out = c(batch)
    ids = manifest.special_tokens
    for r in range(len(batch)):
        assert out["labels"][r, 0] == ids["bos"] and out["labels"][r, -1] == ids["eos"]
        body = gather_body(batch.tokens, body_sources(batch.doc_start, 126), ids["eos"])[r]  # </s> between documents
        np.testing.assert_array_equal(out["labels"][r, 1:-1].numpy(), body)
        np.testing.assert_array_equal(out["decoder_input_ids"][r, 1:], out["labels"][r, :-1])
    assert (out["input_ids"] == ids["mask"]).any()


# ---- BERT masking vs transformers -----------------------------------------------------------------------

def hf_tokenizer(root):
    from transformers import PreTrainedTokenizerFast
    return PreTrainedTokenizerFast(tokenizer_file=str(root / "tokenizer.json"), pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", unk_token="[UNK]")


def test_masking_rate_and_split_match_data_collator_for_language_modeling(datasets):
    from transformers import DataCollatorForLanguageModeling
    manifest, batch = read(datasets["wordpiece"], 510, rows=64)
    ours = MaskedLMCollator(MaskingConfig(), manifest.special_tokens, manifest.vocab_size, 512, 0)(batch)
    ids = ours["input_ids"].clone()
    ids[ours["labels"] != IGNORE] = ours["labels"][ours["labels"] != IGNORE]  # the uncorrupted rows
    hf = DataCollatorForLanguageModeling(hf_tokenizer(datasets["wordpiece"]), seed=0)
    theirs = hf([{"input_ids": row} for row in ids.tolist()])
    mask = manifest.special_tokens["mask"]
    for out in (ours, theirs):
        chosen = out["labels"] != IGNORE
        assert abs(chosen.float().mean().item() * 512 / 510 - 0.15) < 0.01
        became_mask = (out["input_ids"][chosen] == mask).float().mean().item()
        kept = (out["input_ids"][chosen] == ids[chosen]).float().mean().item()
        assert abs(became_mask - 0.8) < 0.02 and abs(kept - 0.1) < 0.02 and abs(1 - became_mask - kept - 0.1) < 0.02


def test_whole_words_never_split(datasets):
    for kind in KINDS:
        manifest, batch = read(datasets[kind], 254, rows=16)
        for unit in ("whole_word", "ngram"):
            c = MaskedLMCollator(MaskingConfig(unit=unit), mlm_ids(manifest), manifest.vocab_size, 256, 0)
            labels = c(batch)["labels"].numpy()
            ids, words = c.rows(batch)
            for r in range(len(ids)):
                word_of = np.cumsum(words[r])
                masked = labels[r] != IGNORE
                for w in np.unique(word_of[masked]):
                    assert masked[word_of == w].all(), (kind, unit)
                assert abs(masked.sum() - round(254 * 0.15)) <= 3


# ---- XLNet ------------------------------------------------------------------------------------------------

def check_permutation_mask(perm: np.ndarray, targets: np.ndarray) -> None:
    """HF's definition: perm[i, j] = targets[j] and order[i] <= order[j], non-targets at order -1. So: no one
    sees a target unless that target comes strictly earlier; non-targets see exactly the non-targets; a
    target never sees itself; and the order is a total order (no two targets see each other)."""
    assert (perm[:, ~targets] == 0).all()
    assert (perm[~targets][:, targets] == 1).all()
    t = np.flatnonzero(targets)
    sub = ~perm[np.ix_(t, t)]  # sub[a, b]: target a sees target b
    assert not sub.diagonal().any()
    assert not (sub & sub.T).any()
    seen = sub.sum(1)
    assert sorted(seen.tolist()) == list(range(len(t)))  # a chain: the k-th target sees the k before it


def test_permutation_masks_are_valid_as_hf_defines_them(datasets):
    from transformers import DataCollatorForPermutationLanguageModeling
    manifest, batch = read(datasets["wordpiece"], 64, rows=8)
    out = PermutationLMCollator(PermutationLMConfig(), manifest.special_tokens, 64, 0)(batch)
    for r in range(8):
        targets = out["target_mapping"][r].sum(0).numpy() > 0
        check_permutation_mask(out["perm_mask"][r].numpy(), targets)
        assert 0.08 < targets.mean() < 0.3
    torch.manual_seed(0)
    hf = DataCollatorForPermutationLanguageModeling(hf_tokenizer(datasets["wordpiece"]))
    theirs = hf([torch.tensor(row) for row in batch.tokens])
    for r in range(8):  # the checker accepts HF's own masks
        check_permutation_mask(theirs["perm_mask"][r].numpy() > 0, (theirs["labels"][r] != IGNORE).numpy())


@pytest.mark.parametrize("plm", [PermutationLMConfig(), PermutationLMConfig(0.5, 3), PermutationLMConfig(0.9, 2)])
def test_permutation_targets_and_order_are_the_loops_of_each_samples_generator(datasets, plm):
    """The collator replays select_targets' draws for the whole batch (0.9: a range of one value, the loop
    itself); the targets and factorization order are those of the loop, drawn from seeded_rng(seed, i)."""
    manifest, batch = read(datasets["wordpiece"], 62, rows=48)
    c = PermutationLMCollator(plm, manifest.special_tokens, 64, 5)
    out = c(batch)
    ids, _ = c.layout.rows(batch)
    for r, index in enumerate(batch.indices):
        rng = seeded_rng(5, int(index))
        targets = select_targets(64, plm, rng) & ~np.isin(ids[r], c.specials)
        order = np.full(64, -1)
        order[targets] = rng.permutation(int(targets.sum()))
        np.testing.assert_array_equal(out["factorization_order"][r].numpy(), order)
    walk = _Lemire(PermutationLMConfig(), 64)
    raw = np.full((1, walk.steps), 7 << 32, dtype=np.uint64)  # a span word of 0: Lemire's redraw for n = 5
    assert not walk.targets(raw)[2][0]


# ---- UniLM, MASS --------------------------------------------------------------------------------------------

def brute_force_mask(mode, length, source):
    allowed = np.zeros((length, length), dtype=bool)
    for i in range(length):
        for j in range(length):
            allowed[i, j] = {0: True, 2: j <= i, 3: j >= i,
                             1: j < source or (i >= source and j <= i)}[mode]
    return allowed


def test_unilm_masks_match_brute_force(datasets):
    for mode in range(4):
        for source in (1, 5, 11):
            np.testing.assert_array_equal(unilm_mask(mode, 12, source), brute_force_mask(mode, 12, source))
    manifest, batch = read(datasets["wordpiece"], 61, rows=64)
    out = UniLMCollator(UniLMConfig(), MLMConfig(), manifest.special_tokens, manifest.vocab_size, 64, 0)(batch)
    modes = out["lm_mode"].numpy()
    assert set(modes.tolist()) == {0, 1, 2, 3}
    for r in range(64):
        source = int((out["token_type_ids"][r] == 0).sum())
        np.testing.assert_array_equal(out["attention_mask"][r].numpy(), brute_force_mask(modes[r], 64, source))
        if modes[r] == 1:
            assert (out["labels"][r, :source] == IGNORE).all()


def test_mass_decoder_sees_only_the_fragments_past(datasets):
    for kind in ("bytelevel_bpe", "unigram"):
        manifest, batch = read(datasets[kind], 126 if kind == "bytelevel_bpe" else 127, rows=8)
        c = MassCollator(MassConfig(), manifest.special_tokens, manifest.vocab_size, 128, 0)
        out = c(batch)
        m = c.fragment_length
        assert out["labels"].shape == (8, m) and m == round(0.5 * c.raw_length)
        lead = c.lead
        for r in range(8):
            eos = manifest.special_tokens["eos"]
            body = gather_body(batch.tokens, body_sources(batch.doc_start, c.raw_length), eos)[r]
            row = np.concatenate([[manifest.special_tokens["bos"]] if lead else [], body, [eos]]).astype(np.int64)
            pos = out["decoder_position_ids"][r].numpy()
            np.testing.assert_array_equal(pos, np.arange(pos[0], pos[0] + m))  # the fragment's own positions
            np.testing.assert_array_equal(out["labels"][r].numpy(), row[pos])
            previous = row[pos[0] - 1] if pos[0] > 0 else c.start
            np.testing.assert_array_equal(out["decoder_input_ids"][r].numpy(), np.append(previous, row[pos[:-1]]))
            outside = np.setdiff1d(np.arange(len(row)), pos)
            np.testing.assert_array_equal(out["input_ids"][r].numpy()[outside], row[outside])
            assert (out["input_ids"][r].numpy()[pos] == c.mask).mean() > 0.6


# ---- determinism: noise from (seed, i) alone -----------------------------------------------------------------

def collators(manifest_of):
    wp, bb, ug = (manifest_of[k] for k in KINDS)
    mlm = MLMConfig()
    return {
        "mlm_static": (wp, lambda m: MaskedLMCollator(MaskingConfig(static=True), m.special_tokens, m.vocab_size,
                                                      64, 1)),
        "whole_word": (wp, lambda m: MaskedLMCollator(MaskingConfig(unit="whole_word"), m.special_tokens,
                                                      m.vocab_size, 64, 1)),
        "ngram": (wp, lambda m: MaskedLMCollator(MaskingConfig(unit="ngram"), m.special_tokens, m.vocab_size, 64, 1)),
        "span_sbo": (wp, lambda m: MaskedLMCollator(MaskingConfig(unit="span", sbo=True), m.special_tokens,
                                                    m.vocab_size, 64, 1)),
        "nsp": (wp, lambda m: SentencePairCollator(mlm, m.special_tokens, m.vocab_size, 64, 1, "nsp")),
        "sop": (wp, lambda m: SentencePairCollator(mlm, m.special_tokens, m.vocab_size, 64, 1, "sop")),
        "structbert": (wp, lambda m: StructBERTCollator(StructBERTConfig(), mlm, m.special_tokens, m.vocab_size,
                                                        64, 1)),
        "unilm": (wp, lambda m: UniLMCollator(UniLMConfig(), mlm, m.special_tokens, m.vocab_size, 64, 1)),
        "plm": (wp, lambda m: PermutationLMCollator(PermutationLMConfig(), m.special_tokens, 64, 1)),
        "contrastive": (wp, lambda m: ContrastiveViewsCollator(mlm, m.special_tokens, m.vocab_size, 64, 1)),
        "prefix_lm": (ug, lambda m: PrefixLMCollator(m.special_tokens, 64, 1)),
        "mass": (ug, lambda m: MassCollator(MassConfig(), m.special_tokens, m.vocab_size, 64, 1)),
        "mass_bart": (bb, lambda m: MassCollator(MassConfig(), m.special_tokens, m.vocab_size, 64, 1)),
        "bart": (bb, lambda m: BartNoiseCollator(BartNoiseConfig(insert_ratio=0.05, rotate_ratio=0.5),
                                                 m.special_tokens, m.vocab_size, 64, 1)),
    }


def test_every_collator_is_a_function_of_seed_and_sample_index(datasets):
    names = {k: datasets[k] for k in KINDS}
    for name, (root, make) in collators(names).items():
        c = make(Manifest.load(root))
        _, batch = read(root, c.raw_length, rows=8, partner=True)
        batch.segment_ids = np.arange(8) * 7
        whole = c(batch)
        order = np.array([5, 2, 7, 0, 3, 1, 6, 4])  # other micro-batches: a shuffled one, then single rows
        parts = [(order, c(rows_of(batch, order)))] + [(np.array([i]), c(rows_of(batch, np.array([i]))))
                                                       for i in range(3)]
        for rows, part in parts:
            for k, v in whole.items():
                for j, i in enumerate(rows):
                    a, b = v[i].numpy(), part[k][j].numpy()
                    if a.shape != b.shape:  # padded to the batch's longest (BART, PLM): the common part
                        cut = tuple(slice(0, min(x, y)) for x, y in zip(a.shape, b.shape, strict=True))
                        a, b = a[cut], b[cut]
                    np.testing.assert_array_equal(a, b, err_msg=f"{name}.{k} row {i}")


def test_static_masking_repeats_across_epochs_and_dynamic_does_not(datasets):
    manifest, batch = read(datasets["wordpiece"], 62, rows=4)
    batch.segment_ids = np.array([3, 3, 9, 9])  # the same segments in two epochs (global indices differ)
    batch.tokens[1], batch.tokens[3] = batch.tokens[0], batch.tokens[2]
    batch.doc_start[1], batch.doc_start[3] = batch.doc_start[0], batch.doc_start[2]
    for static in (True, False):
        out = MaskedLMCollator(MaskingConfig(static=static), manifest.special_tokens, manifest.vocab_size, 64, 0)(batch)
        same = torch.equal(out["labels"][0], out["labels"][1]) and torch.equal(out["labels"][2], out["labels"][3])
        assert same == static


def test_nsp_partner_depends_on_seed_and_index_only():
    a = partner_segments(3, np.arange(100, 164), np.arange(64), 1000)
    b = np.concatenate([partner_segments(3, np.array([i]), np.array([i - 100]), 1000) for i in range(100, 164)])
    np.testing.assert_array_equal(a, b)
    assert (a != np.arange(64)).all()


@pytest.fixture(scope="module")
def language_datasets(datasets, tmp_path_factory):
    """Parallel text (each document beside its words reversed, a stand-in second language) and multilingual
    text (every other document reversed and so marked), 40 documents each, with the wordpiece tokenizer."""
    root = tmp_path_factory.mktemp("language_data")
    with open(CORPUS) as f:
        texts = [json.loads(line)["text"][:600] for _, line in zip(range(40), f, strict=False)]
    with open(root / "pairs.jsonl", "w") as f:
        for text in texts:
            f.write(json.dumps({"a": text, "b": " ".join(reversed(text.split())), "la": "en", "lb": "xx"}) + "\n")
    with open(root / "mixed.jsonl", "w") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"text": text if i % 2 else " ".join(reversed(text.split())),
                                "lang": "en" if i % 2 else "xx"}) + "\n")
    tokenizer = datasets["wordpiece"]
    prepare([root / "pairs.jsonl"], root / "parallel", tokenizer=tokenizer, pair_fields=("a", "b"),
            language_fields=("la", "lb"), progress=False)
    prepare([root / "mixed.jsonl"], root / "multilingual", tokenizer=tokenizer, language_field="lang",
            progress=False)
    return {"parallel": root / "parallel", "multilingual": root / "multilingual"}


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_gives_a_sample_the_same_rows_in_any_micro_batch_and_on_any_rank(name, datasets,
                                                                                          language_datasets):
    """Each objective of `graft objectives`, built as training builds it: the rows of 8 samples collated
    together equal, sample by sample, those collated in micro-batches of 3 and 5, on two ranks of 4, alone,
    and in another order (the loader's micro-batches at other sizes, world sizes and worker counts)."""
    objective = OBJECTIVES[name]
    if objective.data == "parallel":
        root = language_datasets["parallel"]
    elif objective.data.startswith("languages"):
        root = language_datasets["multilingual"]
    elif "encoder_decoder" in objective.needs:  # T5's sentinels, or BART's <mask> for reconstruction
        root = datasets["bytelevel_bpe" if "reconstruction_targets" in objective.needs else "unigram"]
    else:
        root = datasets["wordpiece"]
    cfg = ObjectiveConfig(name=name, masking=MaskingConfig(unit="span", sbo=True))  # masked_lm's costliest unit
    c, _ = build_objective(cfg, CollatorContext(Manifest.load(root), 64, 1, str(root), type_vocab_size=2))
    _, batch = read(root, c.raw_length, rows=8, first=40, partner=True)
    batch.segment_ids = np.arange(8) * 7
    whole = c(batch)
    splits = [[np.arange(3), np.arange(3, 8)], [np.arange(4), np.arange(4, 8)], [np.array([5])],
              [np.array([6, 1, 7, 0, 2])]]
    for split in splits:
        for rows in split:
            part = c(rows_of(batch, rows))
            assert part.keys() == whole.keys()
            for k, v in whole.items():
                for j, i in enumerate(rows):
                    a, b = v[i].numpy(), part[k][j].numpy()
                    if a.shape != b.shape:  # padded to the micro-batch's longest (BART, PLM): the common part
                        cut = tuple(slice(0, min(x, y)) for x, y in zip(a.shape, b.shape, strict=True))
                        a, b = a[cut], b[cut]
                    np.testing.assert_array_equal(a, b, err_msg=f"{name}.{k} sample {i} in micro-batch {rows}")
