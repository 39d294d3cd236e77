"""`graft export`: a run's latest checkpoint -> a Hugging Face model directory, verified by reloading it.

Streaming: tensors go one at a time from the ZeRO shards (`pretrain.zero_checkpoint`) through the family's
key map into safetensors (`pretrain.hf.writer`); optimizer state is never read. The verification loads the
export with `transformers` and runs Graft's model on the very same tensors (mapped back through the key
map, no copy), so memory stays near one model. The directory is assembled under a temporary name and
renamed only after the logits matched, so OUT_DIR either holds a verified export or does not exist.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from data_pipeline.errors import UserError
from data_pipeline.shards import Manifest
from pretrain import checkpoint
from pretrain.config import RunConfig, load_config
from pretrain.dataset_copy import dataset_source, dataset_tokenizer
from pretrain.hf.common import HFPart, NotExportable, require_close
from pretrain.hf.convert import from_hf, graft_keys, graft_tied, parts
from pretrain.hf.remote_code import PREFIX, architecture, needs_remote_code, verify_remote, write_code, write_config
from pretrain.hf.tokenizer import save_tokenizer
from pretrain.hf.writer import write_safetensors
from pretrain.metrics import read_metrics
from pretrain.models import build_model
from pretrain.models.config import ModelConfig, architecture_changes
from pretrain.models.objective_heads import is_head_key
from pretrain.run_dir import CONFIG_FILE, ENGINE_DIR, METRICS_FILE
from pretrain.zero_checkpoint import ZeroCheckpoint

MAX_ABS_DIFF = 1e-4  # fp32 logits of the export vs Graft's model
# Short (the check costs two forward passes of the model, which at a few tokens is one read of every
# weight each) but padded, so the mask paths run too.
CHECK_TEXTS = ["A list is mutable.", "Raise."]


@dataclass
class ExportResult:
    out_dir: Path
    checkpoint: Path
    max_abs_diff: float
    architectures: list[str]


def export(run_dir: Path, out_dir: Path, max_shard_bytes: int | None = None, step: int | None = None) -> ExportResult:
    """Export the latest checkpoint of `run_dir` (or that of `step`) into `out_dir`."""
    if not (run_dir / CONFIG_FILE).is_file():
        raise UserError(f"{run_dir} is not a Graft run directory (no {CONFIG_FILE}); pass the train.run_dir of a run")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserError(f"{out_dir} already exists and is not empty; choose another output directory")
    cfg = load_config(run_dir / CONFIG_FILE)
    ckpt = checkpoint.latest_checkpoint(run_dir) if step is None else checkpoint.checkpoint_at(run_dir, step)
    if ckpt is None:
        raise UserError(f"{run_dir} has no complete checkpoint yet; train it (train.save_every sets how often "
                        "checkpoints are written)")
    remote = needs_remote_code(cfg.model)  # no transformers class computes it: export with its own code
    try:
        the_parts = [] if remote else parts(cfg.model)
    except NotExportable as exc:
        raise UserError(f"{run_dir}/{CONFIG_FILE}: {exc}") from None
    reader = ZeroCheckpoint(ckpt / ENGINE_DIR)
    with torch.device("meta"):  # shapes only: no memory, no initialization work; verify fills it in
        skeleton = build_model(cfg.model)
    _check_matches(reader, skeleton, cfg.model, ckpt, remote)
    _check_same_model(cfg.model, checkpoint.read_meta(ckpt).get("model"), run_dir, ckpt)

    dataset = dataset_source(run_dir, cfg.data.path)  # read first: a dataset gone offline leaves nothing behind
    manifest = Manifest.load(dataset, cfg.data.remote)
    tokenizer = dataset_tokenizer(dataset, manifest, cfg.data.remote)
    staging = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    kwargs = {"max_shard_bytes": max_shard_bytes} if max_shard_bytes else {}
    if remote:  # Graft's own tensor names (tied aliases stored too), its own code
        keys = [(k, k) for k in reader.shapes if not is_head_key(k)] + list(graft_tied(cfg.model).items())
        write_safetensors(staging, [(PREFIX + k, reader.shapes[source]) for k, source in keys],
                          lambda i, keys=keys, pieces=reader.pieces: pieces(keys[i][1]), **kwargs)
        write_code(staging)
        write_config(cfg.model, staging, {**dataclasses.asdict(cfg.model), "init_from": None})
        save_tokenizer(tokenizer, cfg.model, staging)
    for part in the_parts:
        target = staging / part.subdir
        target.mkdir(exist_ok=True)
        entries = list(part.keys.items())  # (Graft key, HF key)
        shapes = reader.shapes
        write_safetensors(target, [(hf, shapes[g]) for g, hf in entries],
                          lambda i, entries=entries, pieces=reader.pieces: pieces(entries[i][0]), **kwargs)
        _write_configs(cfg.model, part, target)
        save_tokenizer(tokenizer, cfg.model, target)
    _write_model_card(cfg, manifest, run_dir, ckpt, staging, out_dir.name, the_parts)
    del reader  # unmaps the shards before the verification loads the export
    # The transformers class has no query stream (XLNet's, pretraining only): the check builds Graft's model without.
    diff = verify_remote(staging, cfg.model, skeleton, MAX_ABS_DIFF) if remote else \
        verify(staging, cfg.model, skeleton if not cfg.model.query_stream else None)
    if out_dir.exists():
        out_dir.rmdir()  # empty, checked above
    staging.rename(out_dir)
    return ExportResult(out_dir=out_dir, checkpoint=ckpt, max_abs_diff=diff,
                        architectures=[p.architecture for p in the_parts]
                        or [f"{architecture(cfg.model)} (remote code)"])


def _check_matches(reader: ZeroCheckpoint, skeleton: torch.nn.Module, cfg: ModelConfig, ckpt: Path,
                   remote: bool = False) -> None:
    """The checkpoint must hold exactly the tensors of the run's model family and sizes (those of `skeleton`),
    beside those of the objective's pretraining-only heads, which the export leaves out."""
    expected = {k: v.shape for k, v in skeleton.state_dict().items() if k not in graft_tied(cfg)}
    found = {k: v for k, v in reader.shapes.items() if not is_head_key(k)}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise UserError(f"the tensors in {ckpt} do not fit model.family={cfg.family} of the run's config "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]}); was config.yaml edited after "
                        "training, or is this another run's checkpoint?")
    wrong = [k for k in expected if expected[k] != found[k]]
    if wrong:
        raise UserError(f"{ckpt}: {wrong[0]} has shape {tuple(found[wrong[0]])}, the run's config gives "
                        f"{tuple(expected[wrong[0]])}; was config.yaml edited after training?")
    assert remote or set(graft_keys(cfg)) <= set(found)


def _check_same_model(cfg: ModelConfig, trained: dict | None, run_dir: Path, ckpt: Path) -> None:
    """The run's config.yaml must still describe the model the checkpoint was trained as. Tensor shapes alone
    cannot tell every edit (a BERT exported as RoBERTa has the very same tensors). Checkpoints written before
    the model config was recorded (`trained` None) are checked by shapes only."""
    edits = architecture_changes(trained, cfg) if trained is not None else []
    if edits:
        raise UserError(f"{run_dir}/{CONFIG_FILE} no longer describes the model {ckpt.name} was trained as "
                        f"({', '.join(edits)}); restore those values to export it")


def _write_configs(cfg: ModelConfig, part: HFPart, out: Path) -> None:
    config = {"architectures": [part.architecture], **part.config, "torch_dtype": "float32"}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    if cfg.is_encoder_decoder:
        generation = {"decoder_start_token_id": cfg.decoder_start_token_id, "eos_token_id": cfg.eos_token_id,
                      "pad_token_id": cfg.pad_token_id}
        if cfg.family == "bart":
            generation.update(bos_token_id=cfg.bos_token_id, forced_eos_token_id=cfg.eos_token_id)
        (out / "generation_config.json").write_text(json.dumps(generation, indent=2))


def verify(out: Path, cfg: ModelConfig, model: torch.nn.Module | None = None) -> float:
    """Load the export with `transformers`, run Graft's model (`model`, built on the meta device, or a new
    one) on the same tensors, compare every part's logits; raise above MAX_ABS_DIFF. Returns the largest
    difference."""
    import transformers

    hf_models = [getattr(transformers, p.architecture).from_pretrained(str(out / p.subdir)).eval()
                 for p in parts(cfg)]
    state, fresh = from_hf([m.state_dict() for m in hf_models], cfg)
    assert not fresh, fresh
    if model is None:
        with torch.device("meta"):
            model = build_model(dataclasses.replace(cfg, query_stream=False))
    model.load_state_dict(state, strict=True, assign=True)  # the HF tensors themselves, no copy
    model.eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    batch = dict(tokenizer(CHECK_TEXTS, padding=True, return_tensors="pt"))
    batch.pop("token_type_ids", None)
    keep = batch["attention_mask"].bool()
    if cfg.is_encoder_decoder:
        batch["decoder_input_ids"] = batch["input_ids"][:, :-1].clone()  # any decoder prefix exercises the maps
        keep = torch.ones_like(batch["decoder_input_ids"], dtype=torch.bool)
    worst = 0.0
    with torch.no_grad():
        for part, hf in zip(parts(cfg), hf_models, strict=True):
            ours = part_outputs(model, batch, part)
            theirs = hf(**batch)
            for name, value in ours.items():
                expected = theirs[name]
                if value.dim() >= 2 and value.shape[:2] == keep.shape:
                    value, expected = value[keep], expected[keep]
                diff = (value - expected).abs().max().item()
                require_close(diff, MAX_ABS_DIFF, f"transformers' {part.architecture} {name}", out)
                worst = max(worst, diff)
    return worst


def part_outputs(model: torch.nn.Module, batch: dict, part: HFPart) -> dict[str, torch.Tensor]:
    """Graft's outputs for one exported part, named as transformers names them in that part's output."""
    out = model({**batch, **part.inputs})
    return {hf_name: getattr(out, name) for name, hf_name in part.outputs.items()}


def _write_model_card(cfg: RunConfig, manifest: Manifest, run_dir: Path, ckpt: Path, out: Path, name: str,
                      the_parts) -> None:
    metrics = read_metrics(run_dir) if (run_dir / METRICS_FILE).is_file() else {}
    last = metrics[max(metrics)] if metrics else {}
    family = cfg.model.family
    if needs_remote_code(cfg.model):  # Graft's own code: a forward with memory (no generate)
        auto = "AutoModelForSeq2SeqLM" if cfg.model.is_encoder_decoder else "AutoModelForMaskedLM"
        tag = "text2text-generation" if cfg.model.is_encoder_decoder else "fill-mask"
        usage = (f'from transformers import {auto}\n'
                 f'model = {auto}.from_pretrained("{name}", trust_remote_code=True)\n'
                 f'out = model(**inputs); next_out = model(**next_inputs, memory=out.memory)  # Transformer-XL memory')
    elif cfg.model.is_encoder_decoder:
        tag, usage = "text2text-generation", (
            f'from transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n'
            f'tok = AutoTokenizer.from_pretrained("{name}")\n'
            f'model = AutoModelForSeq2SeqLM.from_pretrained("{name}")\n'
            f'print(tok.decode(model.generate(**tok("A list is a", return_tensors="pt"))[0]))')
    else:
        tag, usage = "fill-mask", (
            f'from transformers import AutoModelForSequenceClassification\n'
            f'model = AutoModelForSequenceClassification.from_pretrained("{name}", num_labels=2)  # fine-tune it')
    parts_text = "\n".join(f"- `{p.subdir or '.'}`: `{p.architecture}`" for p in the_parts) or \
        "- `.`: Graft's own modeling code (`trust_remote_code=True`)"
    card = f"""---
library_name: transformers
pipeline_tag: {tag}
---
# {family} pretrained with Graft ({cfg.objective.name})

{parts_text}

- Checkpoint: `{ckpt.name}` of run `{run_dir.resolve()}`
- Data: {manifest.total_documents:,} documents, {manifest.total_tokens:,} tokens, vocabulary {manifest.vocab_size:,}
- Final training loss: {last.get('loss', float('nan')):.4f} at step {last.get('step', '?')}
- Final metrics: {json.dumps({k: v for k, v in last.items() if k != 'step'})}

```python
{usage}
```

## Training config
```yaml
{OmegaConf.to_yaml(OmegaConf.structured(cfg)).strip()}
```
"""
    (out / "README.md").write_text(card)
