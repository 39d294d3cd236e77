"""The whole pipeline with real DeepSpeed on 2 CPU processes: train, interrupt, resume, export, reload."""

import json
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT, run_graft
from pretrain.checkpoint import read_model_weights
from pretrain.config import load_config
from pretrain.metrics import read_metrics
from pretrain.models.bert import BertForMaskedLM

TINY = REPO_ROOT / "configs" / "tiny.yaml"
pytestmark = pytest.mark.slow


def losses(run_dir: Path) -> list[float]:
    return [record["loss"] for _, record in sorted(read_metrics(run_dir).items())]


@pytest.fixture(scope="module")
def straight_and_resumed(small_dataset, tmp_path_factory):
    """Run A: 6 steps straight. Run B: stopped at step 3, then resumed to step 6. Both ZeRO-2, 2 ranks."""
    root = tmp_path_factory.mktemp("runs")
    common = [TINY, f"data.path={small_dataset}", "--nproc", "2"]
    run_graft("train", *common, f"train.run_dir={root / 'A'}")
    run_graft("train", *common, f"train.run_dir={root / 'B'}", "train.exit_at_step=3")
    resumed = run_graft("train", *common, f"train.run_dir={root / 'B'}", "--resume")
    return root / "A", root / "B", resumed


def test_resumed_run_continues_the_same_curve(straight_and_resumed):
    run_a, run_b, resumed = straight_and_resumed
    assert len(losses(run_a)) == 6
    assert losses(run_b) == losses(run_a)  # bitwise: fp32 on CPU, same data, noise and RNG state
    assert losses(run_a)[-1] < losses(run_a)[0]
    assert "train.exit_at_step: 3 -> None" in resumed.stdout  # the changed config is reported and kept
    assert list(run_b.glob("config.before-step_00000003.*.yaml"))


def test_resume_refuses_another_architecture(straight_and_resumed, small_dataset):
    """The same tensors as the BERT it trained: DeepSpeed would load them into a RoBERTa without a word."""
    _, run_b, _ = straight_and_resumed
    config = (run_b / "config.yaml").read_text()
    result = run_graft("train", TINY, f"data.path={small_dataset}", f"train.run_dir={run_b}", "model.family=roberta",
                       "train.max_steps=8", "--resume", check=False)
    assert result.returncode == 2, result.stderr
    assert "model.family: 'bert' -> 'roberta'" in result.stderr and "step_00000006" in result.stderr
    assert (run_b / "config.yaml").read_text() == config  # nothing changed


def test_run_directory_layout(straight_and_resumed):
    run_a, _, _ = straight_and_resumed
    ds = json.loads((run_a / "deepspeed.json").read_text())
    assert ds["zero_optimization"]["stage"] == 2
    assert ds["gradient_accumulation_steps"] == 2  # 16 global / (4 micro x 2 ranks)
    assert load_config(run_a / "config.yaml").model.vocab_size == 2000  # resolved from the dataset
    assert list((run_a / "tensorboard").glob("events.out.tfevents.*"))
    record = read_metrics(run_a)[6]
    assert {"loss", "lr", "grad_norm", "loss_scale", "skipped_steps", "tokens_per_s", "samples_per_s",
            "tflops_per_rank", "memory_gb", "data_wait_frac"} <= record.keys()
    assert record["grad_norm"] > 0 and record["tokens_per_s"] > 0 and 0 <= record["data_wait_frac"] < 1
    summary = json.loads((run_a / "summary.json").read_text())
    assert summary["step"] == 6 and summary["tokens"] == 6 * 16 * 32 and summary["skipped_steps"] == 0
    assert summary["final_loss"] == record["loss"] and summary["checkpoint"].endswith("step_00000006")
    checkpoints = run_a / "checkpoints"
    assert (checkpoints / "latest").read_text() == "step_00000006"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step_00000003", "step_00000006"]
    assert sorted(p.name for p in (checkpoints / "step_00000006" / "rng").iterdir()) == \
        ["rank_00000.pt", "rank_00001.pt"]


def test_export_loads_in_transformers_with_matching_logits(straight_and_resumed, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    _, run_b, _ = straight_and_resumed
    out = tmp_path / "hf"
    result = run_graft("export", run_b, out)
    assert "max abs difference" in result.stdout
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"} <= \
        {p.name for p in out.iterdir()}

    # Independently of the export's own check: Graft's model from the ZeRO shards vs the HF export.
    cfg = load_config(run_b / "config.yaml")
    ours = BertForMaskedLM(cfg.model)
    ours.load_state_dict(read_model_weights(run_b / "checkpoints" / "step_00000006"))
    ours.eval()
    theirs = AutoModelForMaskedLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = tokenizer(["A list is a mutable sequence.", "Return the [MASK] of the object."],
                      padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = ours({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}).logits
        actual = theirs(**batch).logits
    keep = batch["attention_mask"].bool()
    torch.testing.assert_close(actual[keep], expected[keep], atol=1e-4, rtol=0)

    predictions = pipeline("fill-mask", model=str(out), device="cpu")("Return the [MASK] of the object.")
    assert len(predictions) == 5 and all(p["token_str"] for p in predictions)


def test_one_process_matches_two_at_the_same_global_batch(small_dataset, tmp_path):
    """The global batch and sample order do not depend on the world size (dropout off: no rank noise)."""
    common = [TINY, f"data.path={small_dataset}", "model.hidden_dropout=0", "model.attention_dropout=0",
              "train.max_steps=3", "train.save_every=3"]
    run_graft("train", *common, f"train.run_dir={tmp_path / 'one'}", "--nproc", "1")
    run_graft("train", *common, f"train.run_dir={tmp_path / 'two'}", "--nproc", "2")
    torch.testing.assert_close(losses(tmp_path / "one"), losses(tmp_path / "two"), rtol=1e-5, atol=0)


def test_export_of_an_earlier_step(straight_and_resumed, tmp_path):
    from safetensors.torch import load_file

    run_a, _, _ = straight_and_resumed
    missing = run_graft("export", run_a, tmp_path / "hf4", "--step", "4", check=False)
    assert missing.returncode == 2 and "no complete checkpoint of step 4; it has 3, 6" in missing.stderr
    run_graft("export", run_a, tmp_path / "hf3", "--step", "3")
    exported = load_file(tmp_path / "hf3" / "model.safetensors")["bert.embeddings.word_embeddings.weight"]
    checkpoints = run_a / "checkpoints"
    assert torch.equal(exported, read_model_weights(checkpoints / "step_00000003")["embeddings.word.weight"])
    assert not torch.equal(exported, read_model_weights(checkpoints / "step_00000006")["embeddings.word.weight"])
    assert "step_00000003" in (tmp_path / "hf3" / "README.md").read_text()
