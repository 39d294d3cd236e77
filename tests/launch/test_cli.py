"""The CLI's help and its answers to bad input: one clear message, exit code 2, nothing overwritten."""

import pytest

from conftest import REPO_ROOT, run_graft
from pretrain.engine import fp16_supported

TINY = REPO_ROOT / "configs" / "tiny.yaml"


@pytest.mark.parametrize("command", [[], ["prepare"], ["train"], ["export"], ["quickstart"], ["config", "keys"],
                                     ["config", "show"]])
def test_help(command):
    result = run_graft(*command, "--help")
    assert "usage: graft" in result.stdout


def fails(*args, cwd=None) -> str:
    result = run_graft(*args, cwd=cwd, check=False)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def test_unknown_config_key_is_named(small_dataset, tmp_path):
    err = fails("train", TINY, f"data.path={small_dataset}", f"train.run_dir={tmp_path}/r", "train.max_stepz=3")
    assert "train.max_stepz" in err and str(TINY) in err


def test_bad_value_is_named(small_dataset, tmp_path):
    err = fails("train", TINY, f"data.path={small_dataset}", f"train.run_dir={tmp_path}/r", "engine.zero_stage=5")
    assert "engine.zero_stage" in err
    err = fails("train", TINY, f"data.path={small_dataset}", f"train.run_dir={tmp_path}/r", "model.num_heads=3")
    assert "model.hidden_size" in err and "model.num_heads" in err


def test_missing_config_and_missing_key(tmp_path):
    assert "does not exist" in fails("train", tmp_path / "nope.yaml")
    assert "data.path" in fails("train", TINY, f"train.run_dir={tmp_path}/r")


def test_batch_that_does_not_divide_is_refused(small_dataset, tmp_path):
    err = fails("train", TINY, f"data.path={small_dataset}", f"train.run_dir={tmp_path}/r", "--nproc", "3")
    assert "engine.global_batch_size" in err


def test_existing_run_is_never_overwritten(small_dataset, tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("precious: true\n")
    err = fails("train", TINY, f"data.path={small_dataset}", f"train.run_dir={run_dir}")
    assert "--resume" in err and str(run_dir) in err
    assert (run_dir / "config.yaml").read_text() == "precious: true\n"


def test_resume_without_checkpoint(small_dataset, tmp_path):
    err = fails("train", TINY, f"data.path={small_dataset}", f"train.run_dir={tmp_path}/r", "--resume")
    assert "no complete checkpoint" in err


def test_export_errors(tmp_path):
    assert "not a Graft run directory" in fails("export", tmp_path, tmp_path / "out")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("{}\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert "not empty" in fails("export", tmp_path / "run", tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_export_without_checkpoint(small_dataset, tmp_path):
    from pretrain.config import load_config, save_config

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_config(load_config(TINY, [f"data.path={small_dataset}", f"train.run_dir={run_dir}"]), run_dir / "config.yaml")
    assert "no complete checkpoint" in fails("export", run_dir, tmp_path / "out")


def test_prepare_errors(tmp_path):
    assert "does not exist" in fails("prepare", tmp_path / "missing.jsonl", "--out", tmp_path / "d")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n")
    assert "no non-empty document" in fails("prepare", empty, "--out", tmp_path / "d")


def test_model_special_ids_must_match_the_dataset_tokenizer(small_dataset, tmp_path):
    """small_dataset is WordPiece ([PAD] = 0); a model padding with id 1 (RoBERTa's convention) is refused."""
    err = fails("train", TINY, f"data.path={small_dataset}", f"train.run_dir={tmp_path}/r", "model.pad_token_id=1")
    assert "model.pad_token_id" in err and "model.pad_token_id=0" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(fp16_supported(), reason="this machine's DeepSpeed accelerator runs fp16")
def test_fp16_without_support_is_refused_before_the_run_dir_exists(small_dataset, tmp_path):
    err = fails("train", TINY, f"data.path={small_dataset}", f"train.run_dir={tmp_path}/r", "engine.precision=fp16",
                "--nproc", "2")
    assert "engine.precision=fp16" in err
    assert not (tmp_path / "r").exists()  # so the same command with bf16 or fp32 just works


def test_objectives_lists_every_objective_with_families_data_and_description():
    from conftest import run_graft
    from pretrain.objectives import OBJECTIVES

    lines = run_graft("objectives").stdout.splitlines()
    assert lines[0].split()[:3] == ["objective", "families", "data"]
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert set(rows) == set(OBJECTIVES)
    assert "bert, roberta, albert" in rows["masked_lm"] and "parallel" in rows["tlm"] and "t5" in rows["prefix_lm"]
    assert all(OBJECTIVES[name].description in line for name, line in rows.items())
