"""The batch-size ramp, the sequence-length curriculum and the named recipes (configs/recipes/)."""

from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from data_pipeline.errors import UserError
from pretrain.config import RECIPES_DIR, load_config, load_recipe
from pretrain.models.config import architecture_changes
from pretrain.curriculum import CurriculumConfig, batch_size_at, seq_len_at, shorten

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
BASE = ["data.path=unused", "train.run_dir=unused", "model.vocab_size=100"]


def test_batch_ramp_grows_in_multiples_of_its_start_then_holds():
    cfg = CurriculumConfig(batch_start=16, batch_ramp_steps=200)
    sizes = [batch_size_at(s, cfg, 64) for s in range(300)]
    assert sizes[:50] == [16] * 50 and sizes[50:100] == [32] * 50 and sizes[100:150] == [48] * 50
    assert sizes[150:] == [64] * 150
    assert [batch_size_at(s, CurriculumConfig(), 64) for s in (0, 10**6)] == [64, 64]  # off


def test_sequence_curriculum_doubles_in_equal_stages():
    cfg = CurriculumConfig(seq_len_start=16, seq_len_steps=300)
    lengths = [seq_len_at(s, cfg, 64) for s in range(400)]
    assert lengths[:100] == [16] * 100 and lengths[100:200] == [32] * 100 and lengths[200:] == [64] * 200
    assert seq_len_at(0, CurriculumConfig(), 64) == 64


def test_shorten_keeps_every_token_and_label_in_order():
    batch = {"input_ids": torch.arange(2 * 8).reshape(2, 8), "labels": -torch.arange(2 * 8).reshape(2, 8)}
    short = shorten(batch, 4)
    assert short["input_ids"].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]
    assert torch.equal(short["labels"], -short["input_ids"])
    assert shorten(batch, 8) is batch


@pytest.mark.parametrize("override, key", [
    (["curriculum.batch_start=24"], "curriculum.batch_start"),  # does not divide the global batch of 32
    (["curriculum.batch_start=16"], "curriculum.batch_ramp_steps"),
    (["curriculum.seq_len_start=48"], "curriculum.seq_len_start"),  # 128 / 48 is no power of 2
    (["curriculum.seq_len_start=32", "curriculum.seq_len_steps=10", "objective.name=mlm_nsp",
      "model.head=pretraining"], "objective.name"),
    # Recurrence lanes are rows of data.seq_len: the sequence curriculum's shorter rows would break them.
    (["curriculum.seq_len_start=32", "curriculum.seq_len_steps=10", "data.lanes=true"],
     r"curriculum.seq_len_start cannot be used with data.lanes=true"),
])
def test_bad_curriculum_is_named(override, key):
    with pytest.raises(UserError, match=key):
        load_config(None, [*BASE, *override])


def test_a_recipe_is_one_key_and_the_configs_own_keys_win(tmp_path):
    recipe = load_recipe("fast")
    cfg = load_config(None, [*BASE, "recipe=fast"])
    assert cfg.optim.lr == recipe.optim.lr and cfg.recipe == "fast"
    cfg = load_config(None, [*BASE, "recipe=fast", "optim.lr=0.123"])
    assert cfg.optim.lr == 0.123
    with pytest.raises(UserError, match="there is no .*nope.yaml; the recipes are: .*fast"):
        load_config(None, [*BASE, "recipe=nope"])


@pytest.mark.parametrize("recipe", sorted(RECIPES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_recipes_change_only_how_the_model_trains(recipe):
    """A recipe may not touch the architecture: the export must stay an ordinary transformers class."""
    load_recipe(recipe.stem)  # refuses keys outside RECIPE_SECTIONS / RECIPE_KEYS
    cfg = load_config(None, [*BASE, f"recipe={recipe.stem}"])
    plain = load_config(None, BASE)
    changed = architecture_changes(asdict(plain.model), cfg.model)
    assert [c for c in changed if not c.startswith("model.initializer_range")] == []  # init: a starting point


def test_a_recipe_setting_the_architecture_is_refused(tmp_path, monkeypatch):
    import pretrain.config

    (tmp_path / "wide.yaml").write_text("optim:\n  lr: 1.0e-3\nmodel:\n  hidden_size: 1024\n")
    monkeypatch.setattr(pretrain.config, "RECIPES_DIR", Path(tmp_path))
    with pytest.raises(UserError, match="may not set model.hidden_size"):
        load_config(None, [*BASE, "recipe=wide"])


def test_held_out_loss_is_scored_at_15_percent_whatever_rate_training_uses(small_dataset, heldout_dataset):
    from data_pipeline.collators.mlm import IGNORE
    from data_pipeline.shards import Manifest
    from pretrain.objectives.base import CollatorContext
    from pretrain.trainer import _eval_batches

    def batches(rate):
        cfg = load_config(TINY, [f"data.path={small_dataset}", "train.run_dir=unused",
                                 f"train.eval_data={heldout_dataset}", f"objective.mlm.mask_prob={rate}"])
        context = CollatorContext(Manifest.load(small_dataset), cfg.data.seq_len, cfg.seed, str(small_dataset))
        return _eval_batches(cfg, context, 0, 1, 4)

    at_15, at_40 = batches(0.15), batches(0.4)
    for a, b in zip(at_15, at_40, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    special = Manifest.load(small_dataset).special_tokens
    for b in at_40:  # BERT's count: round(0.15 x the row's ordinary tokens)
        original = torch.where(b["labels"] != IGNORE, b["labels"], b["input_ids"])
        ordinary = ((original != special["cls"]) & (original != special["sep"])).sum(dim=1)
        assert torch.equal((b["labels"] != IGNORE).sum(dim=1), torch.round(0.15 * ordinary).long())


RAMPED = ["curriculum.batch_start=8", "curriculum.batch_ramp_steps=4", "curriculum.seq_len_start=8",
          "curriculum.seq_len_steps=4", "engine.micro_batch_size=4"]


@pytest.mark.slow
def test_resume_continues_the_ramp_and_curriculum_exactly(small_dataset, tmp_path):
    """Real DeepSpeed on 2 ranks (ZeRO-2): stopped at step 3, inside both the ramp and the curriculum, then
    resumed -- on 2 ranks bitwise, and from a 1-rank first half within float tolerance (no dropout, whose noise
    differs between ranks: the same samples, the same masks, the same curve at any world size)."""
    from conftest import logged_losses, run_graft
    from pretrain.checkpoint import latest_checkpoint, read_meta
    from pretrain.metrics import read_metrics

    args = [TINY, f"data.path={small_dataset}", *RAMPED, "model.hidden_dropout=0", "model.attention_dropout=0"]
    run_graft("train", *args, f"train.run_dir={tmp_path / 'A'}", "--nproc", "2")
    run_graft("train", *args, f"train.run_dir={tmp_path / 'B'}", "train.exit_at_step=3", "--nproc", "2")
    run_graft("train", *args, f"train.run_dir={tmp_path / 'B'}", "--resume", "--nproc", "2")
    run_graft("train", *args, f"train.run_dir={tmp_path / 'C'}", "train.exit_at_step=3", "--nproc", "1")
    run_graft("train", *args, f"train.run_dir={tmp_path / 'C'}", "--resume", "--nproc", "2")
    straight = read_metrics(tmp_path / "A")
    assert [straight[s]["batch_size"] for s in range(1, 7)] == [8, 8, 16, 16, 16, 16]
    assert [straight[s]["seq_len"] for s in range(1, 7)] == [8, 8, 16, 32, 32, 32]
    assert logged_losses(tmp_path / "B") == logged_losses(tmp_path / "A")
    torch.testing.assert_close(logged_losses(tmp_path / "C"), logged_losses(tmp_path / "A"), rtol=1e-5, atol=0)
    for run in "ABC":  # every sample read once, in the loader's order: 8 + 8 + 4 x 16
        assert read_meta(latest_checkpoint(tmp_path / run))["loader"]["consumed_samples"] == 80
