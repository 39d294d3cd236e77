"""Every family end to end, as a user runs it, with real transformers and real DeepSpeed on 2 CPU processes:

small random transformers model -> `graft import` -> Graft's outputs equal transformers' -> 3 steps of the
family's native objective under ZeRO-3 -> `graft export` -> transformers' logits equal those of Graft's model
rebuilt from the ZeRO shards by DeepSpeed's own consolidator -> a downstream use of the export.
"""

import itertools
import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers as T

from conftest import REPO_ROOT, SAMPLE_CORPUS, run_graft
from family_models import compare, perturb
from pretrain import checkpoint
from pretrain.config import load_config
from pretrain.metrics import read_metrics
from pretrain.import_hf import load_pretrained
from pretrain.models import build_model

pytestmark = pytest.mark.slow
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
             max_position_embeddings=64)
KINDS = {"bert": "wordpiece", "roberta": "bytelevel_bpe", "albert": "wordpiece", "electra": "wordpiece",
         "t5": "unigram", "bart": "bytelevel_bpe"}
OBJECTIVES = {"bert": "mlm", "roberta": "mlm", "albert": "mlm_sop", "electra": "rtd", "t5": "span_corruption",
              "bart": "text_infilling"}


def hf_family(family: str, vocab: int) -> list:
    """Random transformers models (main part first) whose special ids follow the tokenizer kind's order."""
    if family == "bert":  # a base model without any head, as saved for sentence embeddings
        return [T.BertModel(T.BertConfig(vocab_size=vocab, **SMALL))]
    if family == "roberta":
        return [T.RobertaForMaskedLM(T.RobertaConfig(vocab_size=vocab, **dict(SMALL, max_position_embeddings=66),
                                                     type_vocab_size=1, pad_token_id=1, bos_token_id=0,
                                                     eos_token_id=2))]
    if family == "albert":
        return [T.AlbertForPreTraining(T.AlbertConfig(vocab_size=vocab, embedding_size=16, **SMALL))]
    if family == "electra":
        disc = T.ElectraForPreTraining(T.ElectraConfig(vocab_size=vocab, embedding_size=16, **SMALL))
        gen = T.ElectraForMaskedLM(T.ElectraConfig(vocab_size=vocab, embedding_size=16,
                                                   **dict(SMALL, hidden_size=16, num_attention_heads=1,
                                                          intermediate_size=32)))
        return [disc, gen]
    if family == "t5":
        return [T.T5ForConditionalGeneration(T.T5Config(
            vocab_size=vocab, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, feed_forward_proj="gated-gelu",
            tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))]
    return [T.BartForConditionalGeneration(T.BartConfig(
        vocab_size=vocab, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2))]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    from data_pipeline.prepare import prepare

    root = tmp_path_factory.mktemp("family_data")
    corpus = root / "corpus.jsonl"
    with open(SAMPLE_CORPUS) as src:
        corpus.write_text("".join(itertools.islice(src, 150)))
    for kind in set(KINDS.values()):
        prepare([corpus], root / kind, vocab_size=1000, tokenizer_kind=kind)
    return {kind: root / kind for kind in set(KINDS.values())}


def batch_for(cfg, generator_seed=0) -> dict:
    g = torch.Generator().manual_seed(generator_seed)
    ids = torch.randint(5, cfg.vocab_size - 100 if cfg.family == "t5" else cfg.vocab_size, (2, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    ids[1, 9:] = cfg.pad_token_id
    batch = {"input_ids": ids, "attention_mask": mask}
    if cfg.is_encoder_decoder:
        batch["decoder_input_ids"] = torch.randint(5, 200, (2, 7), generator=g)
    return batch


def losses(run_dir: Path) -> list[float]:
    return [r["loss"] for _, r in sorted(read_metrics(run_dir).items())]


@pytest.fixture(scope="module")
def runs(datasets, tmp_path_factory) -> dict:
    """Per family: the imported HF directory, the run directory and the export, made through the CLI."""
    root = tmp_path_factory.mktemp("family_runs")
    return {"root": root, "datasets": datasets}


def _import_train_export(family: str, runs: dict) -> dict:
    root, data = runs["root"] / family, runs["datasets"][KINDS[family]]
    vocab = json.loads((data / "manifest.json").read_text())["vocab_size"]
    torch.manual_seed(0)
    hf = [m.eval() for m in hf_family(family, vocab)]
    for m in hf:
        perturb(m)
    if family == "electra":  # generator and discriminator share their embeddings
        hf[1].electra.embeddings.load_state_dict(hf[0].electra.embeddings.state_dict())
    hf_dir = root / "hf_in"
    hf[0].save_pretrained(hf_dir)
    if family == "electra":
        hf[1].save_pretrained(hf_dir / "generator")
    shutil.copy(data / "tokenizer.json", hf_dir / "tokenizer.json")

    cfg_path = root / "continued.yaml"
    imported = run_graft("import", hf_dir, "--config", cfg_path)
    assert f"objective {OBJECTIVES[family]}" in imported.stdout
    overrides = [f"data.path={data}", f"train.run_dir={root / 'run'}"]
    cfg = load_config(cfg_path, overrides)

    # Import direction: Graft's model built from the config (it loads model.init_from) equals transformers'.
    torch.manual_seed(0)
    model = build_model(cfg.model)
    load_pretrained(model, cfg.model)
    model.eval()
    batch = batch_for(cfg.model)
    if family == "bert":
        assert "start fresh" in imported.stdout and "head.dense.weight" in imported.stdout
        with torch.no_grad():
            keep = batch["attention_mask"].bool()
            torch.testing.assert_close(model.encode(**batch)[keep], hf[0](**batch).last_hidden_state[keep])
    else:
        assert "start fresh" not in imported.stdout
        for i, m in enumerate(hf):
            compare(model, m, batch, i)

    run_graft("train", cfg_path, *overrides, "engine.zero_stage=3", "engine.micro_batch_size=2",
              "engine.global_batch_size=4", "data.seq_len=32", "data.num_workers=0", "train.max_steps=3",
              "train.save_every=3", "train.log_every=1", "--nproc", "2")
    out = root / "hf_out"
    exported = run_graft("export", root / "run", out)
    assert "max abs difference" in exported.stdout
    return {"cfg": cfg, "run": root / "run", "out": out, "hf_in": hf_dir}


@pytest.mark.parametrize("family", list(KINDS))
def test_family_import_train_export(family, runs):
    result = _import_train_export(family, runs)
    runs[family] = result
    cfg, run, out = result["cfg"], result["run"], result["out"]
    assert len(losses(run)) == 3 and all(torch.isfinite(torch.tensor(losses(run))))
    assert json.loads((run / "deepspeed.json").read_text())["zero_optimization"]["stage"] == 3

    # Export direction, independently of the export's own check: Graft's model from DeepSpeed's consolidation
    # of the ZeRO-3 shards against transformers loading the export. In float64: trained T5 logits grow large
    # enough that fp32 summation-order noise exceeds fp32's default atol; fp64's defaults are far stricter.
    model = build_model(cfg.model).eval()
    model.load_state_dict(checkpoint.read_model_weights(checkpoint.latest_checkpoint(run)))
    config = json.loads((out / "config.json").read_text())
    parts = [getattr(T, config["architectures"][0]).from_pretrained(out).eval()]
    if family == "electra":
        parts.append(T.ElectraForMaskedLM.from_pretrained(out / "generator").eval())
    for i, hf in enumerate(parts):
        compare(model, hf, batch_for(cfg.model, 1), i, dtype=torch.float64)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= names
    assert ("generation_config.json" in names) == cfg.model.is_encoder_decoder


@pytest.mark.parametrize("family", ["bert", "roberta", "albert", "electra"])
def test_exported_encoder_fine_tunes(family, runs):
    out = runs[family]["out"] if family in runs else pytest.skip("its end-to-end run failed")
    tokenizer = T.AutoTokenizer.from_pretrained(out)
    model = T.AutoModelForSequenceClassification.from_pretrained(out, num_labels=2)
    texts = ["a list is mutable", "a tuple is immutable", "raise an error", "return the value"] * 2
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    labels = torch.tensor([0, 1] * 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    torch.manual_seed(0)
    curve = []
    for _ in range(8):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        curve.append(loss.item())
    assert curve[-1] < curve[0]


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_exported_seq2seq_generates(family, runs):
    out = runs[family]["out"] if family in runs else pytest.skip("its end-to-end run failed")
    tokenizer = T.AutoTokenizer.from_pretrained(out)
    model = T.AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    generated = model.generate(**tokenizer(["A list is a sequence."], return_tensors="pt"), max_new_tokens=5,
                               do_sample=False)
    assert generated.shape[0] == 1 and 2 <= generated.shape[1] <= 6
    assert generated[0, 0].item() == model.generation_config.decoder_start_token_id


def test_bad_exports_fail_with_clear_messages(runs, tmp_path):
    if "bart" not in runs or "bert" not in runs:
        pytest.skip("the bart or bert end-to-end run failed")
    run = runs["bart"]["run"]

    def export_fails(run_dir) -> str:
        result = run_graft("export", run_dir, tmp_path / "out", check=False)
        assert result.returncode == 2, result.stderr
        return result.stderr

    as_t5 = shutil.copytree(run, tmp_path / "as_t5")
    text = (as_t5 / "config.yaml").read_text()
    (as_t5 / "config.yaml").write_text(text.replace("family: bart", "family: t5")
                                       .replace("name: text_infilling", "name: span_corruption")
                                       .replace("layer_norm_eps: 1.0e-05", "layer_norm_eps: 1.0e-06")
                                       .replace("hidden_act: gelu", "hidden_act: gelu_new")
                                       .replace("attention_dropout: 0.0", "attention_dropout: 0.1"))
    assert "do not fit model.family=t5" in export_fails(as_t5)

    partial = shutil.copytree(run, tmp_path / "partial")
    step = checkpoint.latest_checkpoint(partial)
    (step / "engine" / "zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    assert "partial checkpoint" in export_fails(partial)

    # The very same tensors as a BERT: only the model config recorded in the checkpoint can tell.
    as_roberta = shutil.copytree(runs["bert"]["run"], tmp_path / "as_roberta")
    (as_roberta / "config.yaml").write_text((as_roberta / "config.yaml").read_text()
                                            .replace("family: bert", "family: roberta"))
    assert "model.family: 'bert' -> 'roberta'" in export_fails(as_roberta)

    pre_ln = shutil.copytree(runs["bert"]["run"], tmp_path / "pre_ln")
    (pre_ln / "config.yaml").write_text((pre_ln / "config.yaml").read_text().replace("pre_ln: false", "pre_ln: true"))
    assert "pre_ln" in export_fails(pre_ln) and "cannot be exported" in export_fails(pre_ln)


@pytest.mark.parametrize("stage,nproc", [(0, 1), (1, 2)])
def test_export_from_zero_stages_0_and_1(stage, nproc, datasets, tmp_path):
    """(Stage 3 is exported above, stage 2 in test_end_to_end.py.) The exported tensors are the trained ones."""
    from safetensors.torch import load_file

    from pretrain.hf.convert import from_hf

    run, out = tmp_path / "run", tmp_path / "hf"
    run_graft("train", REPO_ROOT / "configs" / "models" / "bert-tiny.yaml", f"data.path={datasets['wordpiece']}",
              f"train.run_dir={run}", f"engine.zero_stage={stage}", "engine.micro_batch_size=2",
              "engine.global_batch_size=4", "data.num_workers=0", "train.max_steps=2", "train.save_every=2",
              "--nproc", str(nproc))
    run_graft("export", run, out)
    engine = checkpoint.latest_checkpoint(run) / "engine"
    if stage == 0:  # DeepSpeed's consolidator does not read stage 0; the module state is complete there
        trained = torch.load(engine / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    else:
        trained = checkpoint.read_model_weights(engine.parent)
    cfg = load_config(run / "config.yaml").model
    exported, fresh = from_hf([load_file(out / "model.safetensors")], cfg)
    assert not fresh and exported.keys() == trained.keys()
    for key, value in trained.items():
        assert torch.equal(exported[key], value.float()), key
