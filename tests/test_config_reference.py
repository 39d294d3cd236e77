"""The config reference comes from the config dataclasses: docs/config.md agrees with the code, every key says
what it means, and `graft config keys` / `graft config show` answer from the same source."""

from dataclasses import dataclass

import yaml

from conftest import REPO_ROOT, run_graft
from pretrain.config_reference import REGENERATE, config_keys, field_comments, keys_markdown


def test_docs_config_md_is_generated_from_the_code():
    written = (REPO_ROOT / "docs" / "config.md").read_text()
    assert written == keys_markdown(config_keys()), f"docs/config.md disagrees with the config dataclasses; " \
                                                    f"regenerate it: {REGENERATE}"


def test_every_key_has_a_meaning():
    blank = [key.name for key in config_keys() if not key.meaning]
    assert not blank, f"config fields without a trailing `# comment` saying what they mean: {', '.join(blank)}"


@dataclass
class _Commented:
    # a block of comment lines
    # directly above a field
    above: int = 1
    trailing: str = "x"  # the trailing comment wins
    # a header that is not this field's meaning
    both: float = 0.5  # its own comment

    none: bool = False


def test_comments_are_read_from_the_source():
    assert field_comments(_Commented) == {"above": "a block of comment lines directly above a field",
                                          "trailing": "the trailing comment wins", "both": "its own comment",
                                          "none": ""}


def test_keys_lists_type_default_and_meaning():
    out = run_graft("config", "keys", "train.").stdout.splitlines()
    assert all(line.startswith("train.") for line in out) and len(out) == len(config_keys("train."))
    max_steps = next(line.split(None, 3) for line in out if line.startswith("train.max_steps "))
    assert max_steps[1:3] == ["int", "1000"] and "optimizer steps" in max_steps[3]
    assert "graft config keys" in run_graft("config", "keys", "nosuchsection", check=False).stderr


def test_show_resolves_a_preset_with_overrides_from_anywhere(tmp_path):
    """Presets resolve by name from any directory; the output is the config graft train would run."""
    result = run_graft("config", "show", "configs/quickstart.yaml", "engine.zero_stage=3", "train.run_dir=r",
                       cwd=tmp_path)
    shown = yaml.safe_load(result.stdout)
    assert shown["engine"]["zero_stage"] == 3 and shown["model"]["num_layers"] == 2  # override, then preset
    assert shown["optim"]["betas"] == [0.9, 0.98] and shown["data"]["path"] == "???"  # default; unset
    assert "data.path" in result.stderr and not list(tmp_path.iterdir())  # nothing written
    assert yaml.safe_load(run_graft("config", "show", "models/t5-tiny", cwd=tmp_path).stdout)["model"]["family"] == "t5"


def test_show_names_a_bad_key_or_value():
    bad_key = run_graft("config", "show", "quickstart", "engine.zero_stagex=1", check=False)
    assert bad_key.returncode == 2 and "engine.zero_stagex" in bad_key.stderr
    bad_value = run_graft("config", "show", "quickstart", "engine.zero_stage=7", "data.path=d", "model.vocab_size=100",
                          "train.run_dir=r",
                          check=False)
    assert bad_value.returncode == 2 and "engine.zero_stage" in bad_value.stderr
