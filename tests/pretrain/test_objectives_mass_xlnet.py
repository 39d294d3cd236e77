"""MASS (T5, BART) and XLNet's permuted LM: their leak tests through gradients, and one short training run of
each preset on the sample corpus whose loss falls and whose export loads in transformers and matches Graft.
(Their collators' noise, a function of (seed, sample index) alone, and the permutation masks' validity as
transformers defines it are checked in tests/data_pipeline/test_objective_collators.py.)"""

import itertools
import json

import numpy as np
import pytest
import torch
import transformers as T

from conftest import REPO_ROOT, logged_losses, run_graft
from data_pipeline.collators.mass import MassCollator, MassConfig
from data_pipeline.collators.permutation_lm import PermutationLMCollator, PermutationLMConfig
from data_pipeline.packing import SegmentBatch
from data_pipeline.sample_corpus import SAMPLE_CORPUS
from pretrain import checkpoint
from pretrain.config import load_config
from pretrain.models import build_model
from pretrain.models.config import ModelConfig

VOCAB, LENGTH = 99, 20
TINY = dict(vocab_size=VOCAB, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
            max_position_embeddings=32, hidden_dropout=0.0, attention_dropout=0.0)


def random_batch(rows: int, length: int, seed: int = 0) -> SegmentBatch:
    rng = np.random.default_rng(seed)
    return SegmentBatch(indices=np.arange(rows), tokens=rng.integers(10, VOCAB - 10, (rows, length)),
                        doc_start=np.zeros((rows, length), dtype=bool))


class Embedded:
    """Records each output of an embedding module, so gradients can be taken with respect to it."""

    def __init__(self, module: torch.nn.Module):
        self.outputs = []
        module.register_forward_hook(lambda _m, _i, out: self.outputs.append(out))


# ---- XLNet: two-stream attention ----------------------------------------------------------------------------

@pytest.mark.parametrize("options", [{}, {"family": "albert", "embedding_size": 8, "share_layers": True,
                                          "positions": "xl"}], ids=["bert", "albert_xl"])
def test_a_target_sees_neither_its_own_token_nor_later_targets(options):
    """The prediction of target i has a zero gradient with respect to its own token's embedding and to every
    target later in the factorization order, and a non-zero one with respect to everything else."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{"family": "bert", **TINY, **options}, query_stream=True)).eval()
    specials = {"cls": 2, "sep": 3, "mask": 4, "pad": 0}
    batch = PermutationLMCollator(PermutationLMConfig(plm_probability=0.3), specials, LENGTH, 0)(
        random_batch(2, LENGTH - 2))
    words = Embedded(model.embeddings.word)
    order = batch["factorization_order"]
    positions = order >= 0
    logits = model({**batch, "positions": positions}).logits
    (tokens,) = words.outputs  # [B, T, E]: the content stream's only view of the tokens
    probe = torch.randn(VOCAB)
    targets = positions.nonzero().tolist()
    assert len(targets) >= 6
    for k, (row, i) in enumerate(targets):
        (grad,) = torch.autograd.grad((logits[k] * probe).sum(), tokens, retain_graph=True)
        sees = grad[row].abs().sum(-1) > 0
        later_or_itself = order[row] >= order[row, i]  # targets at or after i in the order
        np.testing.assert_array_equal(sees.numpy(), (~later_or_itself).numpy(), err_msg=f"target {i} of row {row}")
        assert grad[1 - row].abs().sum() == 0  # rows never see each other


def test_the_query_stream_is_pretraining_only():
    """The query stream's vector is in the model only with model.query_stream, which only permuted_lm takes."""
    from data_pipeline.errors import UserError
    from pretrain.objectives import ObjectiveConfig, check_fits

    with_stream = build_model(ModelConfig(family="bert", **TINY, query_stream=True)).state_dict()
    plain = build_model(ModelConfig(family="bert", **TINY)).state_dict()
    assert set(with_stream) - set(plain) == {"embeddings.query_stream"}
    with pytest.raises(UserError, match="needs model.query_stream=true"):
        check_fits(ObjectiveConfig(name="permuted_lm"), ModelConfig(family="bert"))
    with pytest.raises(UserError, match="set model.query_stream=false"):
        check_fits(ObjectiveConfig(name="mlm"), ModelConfig(family="bert", query_stream=True))
    with pytest.raises(ValueError, match="model.query_stream exists for bert, roberta and albert"):
        ModelConfig(family="electra", query_stream=True)


# ---- MASS -----------------------------------------------------------------------------------------------------

FAMILIES = {
    "t5": (ModelConfig(family="t5", **TINY, decoder_start_token_id=0, eos_token_id=1),
           {"eos": 1, "pad": 0, "sentinel_0": VOCAB - 1}),
    "bart": (ModelConfig(family="bart", **TINY, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                         decoder_start_token_id=2),
             {"bos": 0, "eos": 2, "pad": 1, "mask": VOCAB - 1}),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_mass_decoder_sees_nothing_of_the_fragment_beyond_its_past(family):
    """With every fragment token masked in the encoder, the prediction of fragment token k has a zero gradient
    with respect to the decoder's inputs after k (fragment tokens k and later) and a non-zero one with respect to
    those up to k; the encoder holds no fragment token."""
    cfg, specials = FAMILIES[family]
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    collator = MassCollator(MassConfig(replace_with_mask=1.0, replace_with_random=0.0), specials, VOCAB, LENGTH, 3)
    batch = collator(random_batch(3, collator.raw_length))
    where = batch["decoder_position_ids"]
    assert (batch["input_ids"].gather(1, where) == collator.mask).all()
    embedded = Embedded(model.shared)
    logits = model(batch).logits  # [B, m, V]
    _, decoder_inputs = embedded.outputs  # the encoder's, then the decoder's
    probe = torch.randn(VOCAB)
    m = logits.shape[1]
    for k in range(m):
        (grad,) = torch.autograd.grad((logits[:, k] * probe).sum(), decoder_inputs, retain_graph=True)
        sees = grad.abs().sum(-1) > 0  # [B, m]
        assert sees[:, :k + 1].all() and not sees[:, k + 1:].any(), (family, k, sees)


def test_mass_decoder_positions_are_the_fragments():
    """BART's learned decoder positions read decoder_position_ids; T5's buckets read their distances, which a
    contiguous fragment shares with 0..m-1 and a gapped one does not."""
    for family, (cfg, specials) in FAMILIES.items():
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        collator = MassCollator(MassConfig(), specials, VOCAB, LENGTH, 0)
        batch = collator(random_batch(2, collator.raw_length))
        m = batch["labels"].shape[1]
        with torch.no_grad():
            at_fragment = model(batch).logits
            at_zero = model({**batch, "decoder_position_ids": torch.arange(m).expand(2, m)}).logits
            without = model({k: v for k, v in batch.items() if k != "decoder_position_ids"}).logits
            gapped = model({**batch, "decoder_position_ids": 2 * torch.arange(m).expand(2, m)}).logits
        torch.testing.assert_close(at_zero, without, rtol=0, atol=0)
        assert not torch.allclose(gapped, without)
        if family == "bart":
            assert (batch["decoder_position_ids"][:, 0] > 0).all() and not torch.allclose(at_fragment, without)
        else:
            torch.testing.assert_close(at_fragment, without, rtol=1e-5, atol=1e-5)


# ---- one short training run per preset, and its export ------------------------------------------------------

PRESETS = {"mass": "unigram", "mass_bart": "bytelevel_bpe", "permuted_lm": "wordpiece"}
STEPS = 8


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    from data_pipeline.prepare import prepare

    root = tmp_path_factory.mktemp("mass_xlnet_data")
    corpus = root / "corpus.jsonl"
    with open(SAMPLE_CORPUS) as src:
        corpus.write_text("".join(itertools.islice(src, 80)))  # far more than 8 steps of 8 x 32 tokens
    for kind in sorted(set(PRESETS.values())):
        prepare([corpus], root / kind, vocab_size=1000, tokenizer_kind=kind, progress=False)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_trains_its_loss_falls_and_the_export_matches(preset, datasets, tmp_path):
    run, out = tmp_path / "run", tmp_path / "hf"
    data = datasets / PRESETS[preset]
    run_graft("train", REPO_ROOT / "configs" / "objectives" / f"{preset}.yaml", f"data.path={data}",
              f"train.run_dir={run}", f"train.max_steps={STEPS}", f"train.save_every={STEPS}", "optim.lr=3e-3",
              "engine.zero_stage=1", "engine.micro_batch_size=8", "engine.global_batch_size=8", "data.num_workers=0",
              "--nproc", "1")
    losses = logged_losses(run)
    assert len(losses) == STEPS and sum(losses[-2:]) < sum(losses[:2]), losses
    run_graft("export", run, out)

    cfg = load_config(run / "config.yaml")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [{"t5": "T5ForConditionalGeneration", "bart": "BartForConditionalGeneration",
                                        "bert": "BertForMaskedLM"}[cfg.model.family]]
    theirs = getattr(T, config["architectures"][0]).from_pretrained(out).eval()
    assert all("query_stream" not in k for k in theirs.state_dict())
    ours = build_model(cfg.model).eval()
    ours.load_state_dict(checkpoint.read_model_weights(checkpoint.latest_checkpoint(run)))
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 900, (2, 12), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if cfg.model.is_encoder_decoder:
        batch["decoder_input_ids"] = torch.randint(5, 900, (2, 7), generator=g)
    with torch.no_grad():
        torch.testing.assert_close(ours(batch).logits, theirs(**batch).logits, rtol=1e-4, atol=1e-4)
