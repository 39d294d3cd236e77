"""SpanBERT's span-boundary head, StructBERT, MLM + contrastive (DeCLUTR's views, InfoNCE) and multilingual MLM,
checked against their references' definitions; each collator a function of (seed, sample index) alone; the
contrastive term (in-batch negatives) the same at one and two processes and after a resume. (That every preset
trains, its loss falls and its export matches: tests/pretrain/test_objectives_train.py.)"""

import itertools
import json

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, SAMPLE_CORPUS, logged_losses, run_graft
from segment_batches import read, rows_of
from data_pipeline.collators.boundaries import body_sources, gather_body
from data_pipeline.collators.contrastive import ContrastiveViewsCollator, longest_document_run
from data_pipeline.collators.masked_lm import MaskedLMCollator, MaskingConfig
from data_pipeline.collators.mlm import IGNORE, MLMConfig
from data_pipeline.collators.sentence_pair import SentencePairCollator
from data_pipeline.collators.structbert import StructBERTCollator, StructBERTConfig
from data_pipeline.collators.tlm import MultilingualMLMCollator
from data_pipeline.errors import UserError
from data_pipeline.packing import PackedSegments
from data_pipeline.prepare import prepare
from pretrain.models import build_model
from pretrain.models.config import ModelConfig
from pretrain.objectives import ObjectiveConfig, build_objective
from pretrain.objectives.base import CollatorContext
from pretrain.objectives.heads import SBO_MAX_TARGETS, SpanBoundaryHead, sbo_targets
from pretrain.objectives.losses import info_nce


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A format-2 wordpiece dataset of 150 sample documents, and a multilingual one of the same documents
    (every other one's words reversed and marked "xx", the rest "en") with the same tokenizer."""
    root = tmp_path_factory.mktemp("objective_data")
    with open(SAMPLE_CORPUS) as src:
        lines = list(itertools.islice(src, 150))
    (root / "corpus.jsonl").write_text("".join(lines))
    prepare([root / "corpus.jsonl"], root / "wp", vocab_size=1000, progress=False)
    with open(root / "mixed.jsonl", "w") as f:
        for i, line in enumerate(lines):
            text = json.loads(line)["text"]
            f.write(json.dumps({"text": " ".join(reversed(text.split())) if i % 2 == 0 else text,
                                "lang": "xx" if i % 2 == 0 else "en"}) + "\n")
    prepare([root / "mixed.jsonl"], root / "ml", tokenizer=root / "wp", language_field="lang", progress=False)
    return {"wp": root / "wp", "ml": root / "ml"}


def tiny(vocab_size: int) -> ModelConfig:
    return ModelConfig(vocab_size=vocab_size, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                       max_position_embeddings=64, hidden_dropout=0.0, attention_dropout=0.0)


# ---- SpanBERT's span-boundary objective ---------------------------------------------------------------------

def test_sbo_head_predicts_each_span_token_from_the_two_boundaries_and_its_place(data):
    manifest, batch = read(data["wp"], 62, rows=6)
    out = MaskedLMCollator(MaskingConfig(unit="span", sbo=True), manifest.special_tokens, manifest.vocab_size, 64,
                           0)(batch)
    labels, left, right, place = (out[k] for k in ("labels", "sbo_left", "sbo_right", "sbo_position"))
    targets = sbo_targets(out)
    assert torch.equal(targets, (labels != IGNORE) & (place <= SBO_MAX_TARGETS))
    for r, t in targets.nonzero().tolist():  # each target inside its span, the boundaries just outside it
        a, b = int(left[r, t]), int(right[r, t])
        assert a < t < b and int(place[r, t]) == t - a
        assert (labels[r, a + 1:b] != IGNORE).all()

    torch.manual_seed(0)
    model = build_model(tiny(manifest.vocab_size))
    head = SpanBoundaryHead(model.config, model.embeddings.word)
    assert head.decoder.weight is model.embeddings.word.weight  # the vocabulary projection is tied
    hidden = torch.randn(6, 64, 32, requires_grad=True)
    logits = head(hidden, out)
    rows, cols = targets.nonzero(as_tuple=True)
    assert logits.shape == (len(rows), manifest.vocab_size)
    # SpanBERT's arithmetic: [h_left; h_right; p] -> Linear, GeLU, LayerNorm -> Linear, GeLU, LayerNorm -> vocab.
    k = len(rows) // 2
    r, t = int(rows[k]), int(cols[k])
    x = torch.cat([hidden[r, left[r, t]], hidden[r, right[r, t]], head.position.weight[place[r, t] - 1]])
    x = torch.nn.functional.layer_norm(torch.nn.functional.gelu(head.dense1(x)), (32,), head.norm1.weight,
                                       head.norm1.bias, 1e-12)
    x = torch.nn.functional.layer_norm(torch.nn.functional.gelu(head.dense2(x)), (32,), head.norm2.weight,
                                       head.norm2.bias, 1e-12)
    torch.testing.assert_close(logits[k], x @ model.embeddings.word.weight.T + head.bias)
    # Leak check: the prediction reads the two boundary outputs only, never the span's own tokens.
    (grad,) = torch.autograd.grad(logits[k].sum(), hidden)
    seen = {tuple(p) for p in grad.abs().sum(-1).nonzero().tolist()}
    assert seen == {(r, int(left[r, t])), (r, int(right[r, t]))}


# ---- StructBERT ---------------------------------------------------------------------------------------------

def test_structbert_sentence_task_is_next_previous_or_random_and_trigrams_are_put_back(data):
    manifest, batch = read(data["wp"], 61, rows=90, partner=True)
    ids = manifest.special_tokens
    mlm = MLMConfig()
    out = StructBERTCollator(StructBERTConfig(), mlm, ids, manifest.vocab_size, 64, 0)(batch)
    task = out["sentence_labels"].numpy()
    assert all(20 <= (task == k).sum() <= 40 for k in range(3))  # 1/3 each of 90 (binomial sd 4.5)
    # Before the trigram shuffle, a row is the in-order pair (0), the swapped one (1) or B from another segment
    # (2), masked as those pairs are masked.
    structural = out["structural_labels"].numpy()
    unshuffled = np.where(structural != IGNORE, structural, out["input_ids"].numpy())
    in_order = SentencePairCollator(mlm, ids, manifest.vocab_size, 64, 0, "sop").pair_rows(
        batch, flips=np.zeros(90, dtype=bool))
    swapped = SentencePairCollator(mlm, ids, manifest.vocab_size, 64, 0, "sop").pair_rows(
        batch, flips=np.ones(90, dtype=bool))
    replaced = SentencePairCollator(mlm, ids, manifest.vocab_size, 64, 0, "nsp").pair_rows(
        batch, flips=np.ones(90, dtype=bool))
    for k, rows in enumerate((in_order, swapped, replaced)):
        np.testing.assert_array_equal(unshuffled[task == k], rows["input_ids"][task == k])
        np.testing.assert_array_equal(out["labels"].numpy()[task == k], rows["labels"][task == k])
    # Word structure: disjoint trigrams of unmasked ordinary tokens, each a permutation of its originals.
    count = round(0.05 * 64 / 3)
    for r in range(90):
        where = np.flatnonzero(structural[r] != IGNORE)
        assert len(where) == 3 * count
        groups = where.reshape(-1, 3)
        assert (np.diff(groups, axis=1) == 1).all()
        assert (out["labels"].numpy()[r, where] == IGNORE).all()
        assert not np.isin(structural[r, where], [ids["cls"], ids["sep"]]).any()
        for g in groups:
            assert sorted(out["input_ids"].numpy()[r, g]) == sorted(structural[r, g])
    none = StructBERTCollator(StructBERTConfig(shuffle_prob=0), mlm, ids, manifest.vocab_size, 64, 0)(batch)
    assert (none["structural_labels"] == IGNORE).all()


# ---- MLM + contrastive (DeCLUTR) ---------------------------------------------------------------------------

def test_contrastive_views_are_adjacent_spans_of_one_document_and_only_the_anchor_is_masked(data):
    manifest, batch = read(data["wp"], 30, rows=40)
    ids = manifest.special_tokens
    out = ContrastiveViewsCollator(MLMConfig(), ids, manifest.vocab_size, 32, 0)(batch)
    src = body_sources(batch.doc_start, 30)
    body = gather_body(batch.tokens[:, :30], src, ids["sep"])
    sentences = gather_body(batch.sentence_start[:, :30], src, True)
    labels, anchor_mask = out["labels"].numpy(), out["attention_mask"].numpy().astype(bool)
    anchors = np.where(labels != IGNORE, labels, out["input_ids"].numpy())
    at_sentence = 0
    for r in range(40):
        start, end = longest_document_run(src[r])
        runs = np.diff(np.concatenate([[-1], np.flatnonzero(src[r] < 0), [30]])) - 1
        assert (src[r, start:end] >= 0).all() and end - start == runs.max()  # one document's longest piece
        a = anchors[r][anchor_mask[r]][1:-1]
        p = out["positive_ids"][r][out["positive_mask"][r].bool()].numpy()[1:-1]
        np.testing.assert_array_equal(np.concatenate([a, p]), body[r, start:end])
        cut, n = start + len(a), end - start
        lo, hi = start + max(1, n // 4), start + min(n - 1, 3 * n // 4)
        assert lo <= cut <= hi
        if sentences[r, lo:hi + 1].any():  # cut at a sentence start wherever the middle half has one
            assert sentences[r, cut]
            at_sentence += 1
        masked = labels[r] != IGNORE
        assert not (masked & ~anchor_mask[r]).any()  # padding is never masked
        assert masked.sum() == max(1, round(0.15 * len(a)))
    assert at_sentence >= 10


def test_info_nce_is_the_cross_entropy_of_the_scaled_cosines_with_in_batch_negatives():
    torch.manual_seed(0)
    anchors, positives = torch.randn(5, 8), torch.randn(5, 8)
    cos = torch.nn.functional.cosine_similarity(anchors[:, None], positives[None], dim=-1) / 0.05
    expected = -torch.stack([cos[i, i] - torch.logsumexp(cos[i], 0) for i in range(5)]).mean()
    torch.testing.assert_close(info_nce(anchors, positives, 0.05), expected)
    assert float(info_nce(anchors[:1], positives[:1], 0.05)) == 0  # a micro-batch of one has no negative


# ---- multilingual MLM ---------------------------------------------------------------------------------------

def test_multilingual_mlm_gives_each_token_its_documents_language(data):
    manifest, batch = read(data["ml"], 62, rows=12)
    assert manifest.multilingual and manifest.languages == ["xx", "en"] and not manifest.parallel
    assert batch.side_start is None  # languages, but no pairs
    out = MultilingualMLMCollator(MLMConfig(), manifest.special_tokens, manifest.vocab_size, 64, 0)(batch)
    types = out["token_type_ids"].numpy()
    src = body_sources(batch.doc_start, 62)
    for r in range(12):
        own = src[r] >= 0
        np.testing.assert_array_equal(types[r, 1:-1][own], batch.language[r, src[r][own]])
        docs = np.cumsum(batch.doc_start[r])  # documents alternate languages: one language per document
        for d in np.unique(docs):
            assert len(np.unique(batch.language[r][docs == d])) == 1
    assert set(np.unique(types)) == {0, 1}
    masked = MaskedLMCollator(MaskingConfig(), manifest.special_tokens, manifest.vocab_size, 64, 0)(batch)
    assert torch.equal(out["labels"], masked["labels"])  # BERT's masking, unchanged


def test_languages_must_fit_the_token_types_and_each_objective_its_data(data):
    def collator(name, root, types):
        manifest = PackedSegments(root, 30, cache_dir=str(root / "cache")).manifest
        return build_objective(ObjectiveConfig(name=name), CollatorContext(manifest, 32, 0, str(root),
                                                                           type_vocab_size=types))[0]

    with pytest.raises(UserError, match=r"2 languages \(xx, en\) but model.type_vocab_size is 1; set "
                                        r"model.type_vocab_size=2"):
        collator("multilingual_mlm", data["ml"], 1)
    with pytest.raises(UserError, match="needs a dataset that records languages.*--language-field"):
        collator("multilingual_mlm", data["wp"], 2)
    _, batch = read(data["ml"], 30, rows=2)
    with pytest.raises(UserError, match="needs parallel text"):
        collator("tlm", data["ml"], 2)(batch)  # monolingual text is no parallel pair


# ---- determinism ---------------------------------------------------------------------------------------------

def test_the_new_collators_are_functions_of_seed_and_sample_index(data):
    made = {
        "contrastive": (data["wp"], lambda m: ContrastiveViewsCollator(MLMConfig(), m.special_tokens, m.vocab_size,
                                                                       64, 1)),
        "multilingual": (data["ml"], lambda m: MultilingualMLMCollator(MLMConfig(), m.special_tokens, m.vocab_size,
                                                                       64, 1)),
        "span_sbo": (data["wp"], lambda m: MaskedLMCollator(MaskingConfig(unit="span", sbo=True), m.special_tokens,
                                                            m.vocab_size, 64, 1)),
        "structbert": (data["wp"], lambda m: StructBERTCollator(StructBERTConfig(), MLMConfig(), m.special_tokens,
                                                                m.vocab_size, 64, 1)),
    }
    for name, (root, make) in made.items():
        manifest, batch = read(root, 62, rows=8, partner=True)
        c = make(manifest)
        whole = c(batch)
        order = np.array([5, 2, 7, 0, 3, 1, 6, 4])  # other micro-batches: a shuffled one, then single rows
        for rows in [order] + [np.array([i]) for i in range(3)]:
            part = c(rows_of(batch, rows))
            for k, v in whole.items():
                np.testing.assert_array_equal(v[rows].numpy(), part[k].numpy(), err_msg=f"{name}.{k}")


@pytest.mark.slow
def test_contrastive_run_is_the_same_at_one_and_two_processes_and_after_resume(data, tmp_path):
    """In-batch negatives are the micro-batch's other rows. A micro-batch is the same block of global sample
    indices at any world size (rank r's k-th micro-batch is block k x world + r), so at one micro-batch size the
    losses match; two processes stopped and resumed continue the same curve."""
    common = [REPO_ROOT / "configs" / "objectives" / "mlm_contrastive.yaml", f"data.path={data['wp']}",
              "train.max_steps=4", "train.save_every=2", "engine.zero_stage=2", "engine.micro_batch_size=4",
              "engine.global_batch_size=8", "data.num_workers=0"]
    run_graft("train", *common, f"train.run_dir={tmp_path / 'one'}", "--nproc", "1")
    run_graft("train", *common, f"train.run_dir={tmp_path / 'two'}", "train.exit_at_step=2", "--nproc", "2")
    run_graft("train", *common, f"train.run_dir={tmp_path / 'two'}", "--resume", "--nproc", "2")
    one, two = logged_losses(tmp_path / "one"), logged_losses(tmp_path / "two")
    assert len(one) == 4
    torch.testing.assert_close(two, one, rtol=1e-5, atol=0)
