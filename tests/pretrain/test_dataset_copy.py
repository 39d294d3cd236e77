"""A run directory keeps its dataset's manifest and tokenizer: export works with the dataset gone, and a run
resumed on another dataset is refused."""

import shutil

import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from conftest import REPO_ROOT, logged_losses, run_graft

pytestmark = pytest.mark.slow


def test_export_without_the_dataset_and_resume_checks(small_dataset, heldout_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    run_dir = tmp_path / "run"
    args = [REPO_ROOT / "configs" / "tiny.yaml", f"train.run_dir={run_dir}", "data.num_workers=0"]
    run_graft("train", *args, f"data.path={data}", "train.max_steps=1")
    for name in ("manifest.json", "tokenizer.json"):
        assert (run_dir / "dataset" / name).read_bytes() == (data / name).read_bytes()

    # The dataset moved: the run resumes from its new place (the same files), and exports with it gone.
    data.rename(tmp_path / "moved")
    run_graft("train", *args, f"data.path={tmp_path / 'moved'}", "train.max_steps=2", "--resume")
    assert len(logged_losses(run_dir)) == 2
    shutil.rmtree(tmp_path / "moved")
    out = tmp_path / "hf"
    assert "max abs difference" in run_graft("export", run_dir, out).stdout
    expected = Tokenizer.from_file(str(small_dataset / "tokenizer.json"))
    text = "Return the length of the object."
    assert AutoTokenizer.from_pretrained(out)(text)["input_ids"] == expected.encode(text).ids
    assert "150 documents" in (out / "README.md").read_text()  # the model card's data statistics

    # Another dataset (same tokenizer, other documents) is not this run's; refused before anything is written.
    configs = {p.name: p.read_bytes() for p in run_dir.glob("config*.yaml")}
    failed = run_graft("train", *args, f"data.path={heldout_dataset}", "train.max_steps=3", "--resume", check=False)
    assert failed.returncode == 2, failed.stderr
    assert f"{heldout_dataset} is not the dataset this run started on" in failed.stderr
    assert "is another manifest.json;" in failed.stderr
    assert len(logged_losses(run_dir)) == 2
    assert {p.name: p.read_bytes() for p in run_dir.glob("config*.yaml")} == configs
