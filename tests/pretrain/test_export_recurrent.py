"""A recurrent model exports with its own modeling code: `transformers` loads it with trust_remote_code in a
fresh Python where Graft cannot be imported, and it reproduces Graft's outputs over consecutive segments with
memory carried."""

import dataclasses
import itertools
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import REPO_ROOT, logged_losses, run_graft
from pretrain.hf.remote_code import PREFIX, write_code, write_config
from pretrain.models import build_model
from pretrain.models.config import ModelConfig, RecurrenceConfig
from pretrain.models.memory import MemoryCache

SEGMENTS, LENGTH = 3, 16
# Run in a fresh interpreter: Graft's packages are made unimportable before transformers loads the export.
WITHOUT_GRAFT = """
import sys, importlib.abc
class NoGraft(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pretrain", "data_pipeline", "launch"):
            raise ImportError(f"{name} must not be needed")
sys.meta_path.insert(0, NoGraft())
import torch, transformers
export, ids_file, out_file, seq2seq = sys.argv[1:5]
auto = transformers.AutoModelForSeq2SeqLM if seq2seq == "1" else transformers.AutoModelForMaskedLM
model = auto.from_pretrained(export, trust_remote_code=True).eval()
ids, memory, logits = torch.load(ids_file), None, []
with torch.no_grad():
    for s in range(ids.shape[1] // %d):
        segment = ids[:, s * %d:(s + 1) * %d]
        extra = {"decoder_input_ids": segment[:, :5]} if seq2seq == "1" else {}
        out = model(input_ids=segment, memory=memory, **extra)
        memory = out.memory
        logits.append(out.logits)
assert not any(m.split(".")[0] in ("pretrain", "data_pipeline", "launch") for m in sys.modules)
torch.save(logits, out_file)
""" % (LENGTH, LENGTH, LENGTH)


def remote_logits(export, ids, tmp_path, seq2seq: bool) -> list[torch.Tensor]:
    torch.save(ids, tmp_path / "ids.pt")
    subprocess.run([sys.executable, "-c", WITHOUT_GRAFT, str(export), str(tmp_path / "ids.pt"),
                    str(tmp_path / "out.pt"), "1" if seq2seq else "0"], check=True, cwd=tmp_path)
    return torch.load(tmp_path / "out.pt")


def graft_logits(cfg: ModelConfig, state: dict, ids: torch.Tensor, seq2seq: bool) -> list[torch.Tensor]:
    model = build_model(cfg).eval()
    model.load_state_dict({k.removeprefix(PREFIX): v for k, v in state.items()})
    cache, logits = MemoryCache(), []
    with torch.no_grad():
        for s in range(ids.shape[1] // LENGTH):
            segment = ids[:, s * LENGTH:(s + 1) * LENGTH]
            batch = {"input_ids": segment, "memory": cache}
            if seq2seq:
                batch["decoder_input_ids"] = segment[:, :5]
            logits.append(model(batch).logits)
    return logits


@pytest.fixture(scope="module")
def xl_run(small_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("xl") / "run"
    run_graft("train", REPO_ROOT / "configs" / "tiny.yaml", f"data.path={small_dataset}", f"train.run_dir={run}",
              "model.positions=xl", "model.recurrence.mem_len=24", "data.lanes=true", "train.max_steps=2")
    return run


@pytest.mark.slow
def test_trained_xl_encoder_exports_with_its_code_and_matches_graft(xl_run, tmp_path):
    result = run_graft("export", xl_run, tmp_path / "export")
    assert "GraftForMaskedLM (remote code)" in result.stdout
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForMaskedLM"] == "modeling_graft.GraftForMaskedLM"
    cfg = ModelConfig(**config["graft"])
    ids = torch.randint(5, cfg.vocab_size, (2, SEGMENTS * LENGTH))
    ours = graft_logits(cfg, load_file(tmp_path / "export" / "model.safetensors"), ids, seq2seq=False)
    theirs = remote_logits(tmp_path / "export", ids, tmp_path, seq2seq=False)
    assert len(theirs) == SEGMENTS
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours[1], graft_logits(cfg, load_file(tmp_path / "export" / "model.safetensors"),
                                                    ids[:, LENGTH:], seq2seq=False)[0], atol=1e-4)  # memory counts


SEQ2SEQ = {
    "t5": dict(family="t5", vocab_size=97, hidden_size=32, num_layers=2, num_heads=4, head_dim=8, intermediate_size=64,
               hidden_act="gelu_new", decoder_start_token_id=0, recurrence=RecurrenceConfig(mem_len=LENGTH)),
    "bart": dict(family="bart", vocab_size=97, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                 max_position_embeddings=64, decoder_start_token_id=2, scale_embedding=True, positions="xl",
                 recurrence=RecurrenceConfig(mem_len=LENGTH),
                 initializer_range=0.2),  # at BART's 0.02 the fresh decoder all but ignores the encoder
}


@pytest.mark.parametrize("family", SEQ2SEQ)
def test_seq2seq_with_memory_loads_as_seq2seq_with_its_code(tmp_path, family):
    cfg = ModelConfig(**SEQ2SEQ[family])
    torch.manual_seed(0)
    model = build_model(cfg)
    state = {PREFIX + k: v.detach().clone() for k, v in model.state_dict().items()}  # buffers too (BART)
    export = tmp_path / "export"
    export.mkdir()
    save_file(state, export / "model.safetensors")
    write_code(export)
    write_config(cfg, export, dataclasses.asdict(cfg))
    ids = torch.randint(2, 97, (2, SEGMENTS * LENGTH))
    ours = graft_logits(cfg, state, ids, True)
    for a, b in zip(ours, remote_logits(export, ids, tmp_path, True), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours[1], graft_logits(cfg, state, ids[:, LENGTH:], True)[0], atol=1e-4)  # memory counts


@pytest.mark.slow
def test_eval_reports_loss_per_segment_with_and_without_memory(xl_run, heldout_dataset, tmp_path):
    result = run_graft("eval", xl_run, "--data", heldout_dataset, "--segments", "4", "--out", tmp_path)
    report = json.loads((tmp_path / "long_eval.json").read_text())
    assert report["documents"] > 0 and report["mem_len"] == 24 and report["segment_tokens"] == 30
    with_memory, without = report["with_memory"], report["without_memory"]
    assert len(with_memory) == len(without) == 4
    assert with_memory[0] == without[0]  # the first segment has no memory either way
    assert with_memory[1:] != without[1:]  # later ones read it
    assert (tmp_path / "long_eval.png").stat().st_size > 1000 and "with_memory" in result.stdout
    refused = run_graft("eval", xl_run, "--data", heldout_dataset, "--mem-len", "0", check=False)
    assert refused.returncode == 2 and "--mem-len" in refused.stderr


@pytest.mark.slow
@pytest.mark.parametrize("family, kind, objective", [("t5", "unigram", "span_corruption"),
                                                      ("bart", "bytelevel_bpe", "text_infilling")])
def test_trained_seq2seq_with_memory_exports_and_evaluates(family, kind, objective, tmp_path):
    """The real pipeline: the family's objective with doc_index, lanes and encoder memory trained through the CLI;
    `graft export` writes (and checks over 3 segments) the remote code; `graft eval` scores the objective's loss
    per segment with and without memory."""
    from data_pipeline.prepare import prepare

    corpus = tmp_path / "corpus.jsonl"
    with open(REPO_ROOT / "data_pipeline" / "sample_corpus" / "python_docs.jsonl") as src:
        corpus.write_text("".join(itertools.islice(src, 60)))
    prepare([corpus], tmp_path / "data", vocab_size=1000, tokenizer_kind=kind)
    run = tmp_path / "run"
    # BART: XL positions; a larger init, as at BART's 0.02 the fresh decoder all but ignores the encoder (and so
    # the memory: the losses would agree to the report's 5 decimals)
    bart = ["model.positions=xl", "model.initializer_range=0.2"] if family == "bart" else []
    common = [REPO_ROOT / "configs" / "models" / f"{family}-tiny.yaml", f"data.path={tmp_path / 'data'}",
              "model.recurrence.mem_len=24", "data.lanes=true", "train.max_steps=2", "train.save_every=1",
              "data.num_workers=0", *bart]
    run_graft("train", *common, f"train.run_dir={run}")
    if family == "bart":  # interrupted after step 1 and resumed: the lanes' memory comes back from the checkpoint
        run_graft("train", *common, f"train.run_dir={tmp_path / 'resumed'}", "train.exit_at_step=1")
        run_graft("train", *common, f"train.run_dir={tmp_path / 'resumed'}", "--resume")
        assert logged_losses(tmp_path / "resumed") == logged_losses(run)
    exported = run_graft("export", run, tmp_path / "export")
    assert "GraftForSeq2SeqLM (remote code)" in exported.stdout
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSeq2SeqLM"] == "modeling_graft.GraftForSeq2SeqLM"
    assert "trust_remote_code=True" in (tmp_path / "export" / "README.md").read_text()
    run_graft("eval", run, "--data", tmp_path / "data", "--segments", "3", "--out", tmp_path / "eval")
    report = json.loads((tmp_path / "eval" / "long_eval.json").read_text())
    assert report["loss"] == objective and report["documents"] > 0 and report["mem_len"] == 24
    with_memory, without = report["with_memory"], report["without_memory"]
    assert len(with_memory) == len(without) == 3
    assert with_memory[0] == pytest.approx(without[0], abs=1e-4)  # no memory yet either way
    assert with_memory[1:] != without[1:]
    assert (tmp_path / "eval" / "long_eval.png").stat().st_size > 1000
