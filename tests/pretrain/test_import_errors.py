"""`graft import` refuses what it cannot import, with one clear line."""

import json

from conftest import run_graft


def fails(*args) -> str:
    result = run_graft(*args, check=False)
    assert result.returncode == 2, result.stderr
    return result.stderr


def test_import_errors_name_the_file_and_the_fix(tmp_path):
    assert "no config.json" in fails("import", tmp_path, "--config", tmp_path / "c.yaml")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    err = fails("import", tmp_path, "--config", tmp_path / "c.yaml")
    assert "model_type 'gpt2' is not supported" in err and "bert, roberta" in err
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "feed_forward_proj": "relu"}))
    assert "feed_forward_proj" in fails("import", tmp_path, "--config", tmp_path / "c.yaml")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 50, "hidden_size": 8,
                                                      "num_attention_heads": 2, "intermediate_size": 8,
                                                      "num_hidden_layers": 1}))
    assert "no model.safetensors" in fails("import", tmp_path, "--config", tmp_path / "c.yaml")


def test_help_explains_import_and_export():
    out = run_graft("import", "--help").stdout
    assert "continued pretraining" in out.lower() or "starts fresh" in out
    assert "ElectraForPreTraining" in run_graft("export", "--help").stdout
