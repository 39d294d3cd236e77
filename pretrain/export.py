"""`graft export`: a run's checkpoint -> a Hugging Face `BertForMaskedLM` directory, verified by reloading it.

The directory is assembled under a temporary name and renamed only after `transformers` has loaded it and
its logits matched Graft's model, so OUT_DIR either holds a verified export or does not exist.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from data_pipeline.errors import UserError
from data_pipeline.prepare import TOKENIZER_FILE
from data_pipeline.shards import Manifest
from data_pipeline.tokenizer import load_tokenizer
from pretrain import checkpoint
from pretrain.config import RunConfig, load_config
from pretrain.hf.bert import to_hf, to_hf_config
from pretrain.metrics import read_metrics
from pretrain.models import build_model
from pretrain.models.bert import BertForMaskedLM
from pretrain.trainer import CONFIG_FILE

MAX_ABS_DIFF = 1e-4  # fp32 logits of the export vs Graft's model
# Aliases of other tensors (safetensors stores each storage once; transformers re-ties them on load).
TIED_HF_KEYS = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")
CHECK_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A list is a mutable sequence; a tuple is an immutable one.",
    "Exceptions are raised when an error occurs.",
]


@dataclass
class ExportResult:
    out_dir: Path
    checkpoint: Path
    max_abs_diff: float


def export(run_dir: Path, out_dir: Path) -> ExportResult:
    if not (run_dir / CONFIG_FILE).is_file():
        raise UserError(f"{run_dir} is not a Graft run directory (no {CONFIG_FILE}); pass the train.run_dir of a run")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserError(f"{out_dir} already exists and is not empty; choose another output directory")
    cfg = load_config(run_dir / CONFIG_FILE)
    ckpt = checkpoint.latest_checkpoint(run_dir)
    if ckpt is None:
        raise UserError(f"{run_dir} has no complete checkpoint yet; train it (train.save_every sets how often "
                        "checkpoints are written)")
    model = _load_model(cfg, ckpt)

    staging = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    hf_state = {k: v.contiguous() for k, v in to_hf(model.state_dict()).items() if k not in TIED_HF_KEYS}
    save_file(hf_state, str(staging / "model.safetensors"), metadata={"format": "pt"})
    (staging / "config.json").write_text(json.dumps({**to_hf_config(cfg.model), "torch_dtype": "float32"}, indent=2))
    tokenizer = _save_tokenizer(cfg, staging)
    _write_model_card(cfg, run_dir, ckpt, staging, out_dir.name)
    diff = _verify(model, tokenizer, staging)
    if out_dir.exists():
        out_dir.rmdir()  # empty, checked above
    staging.rename(out_dir)
    return ExportResult(out_dir=out_dir, checkpoint=ckpt, max_abs_diff=diff)


def _load_model(cfg: RunConfig, ckpt: Path) -> BertForMaskedLM:
    model = build_model(cfg.model)
    weights = checkpoint.read_model_weights(ckpt)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise UserError(f"the weights in {ckpt} do not fit the run's model config ({str(exc).splitlines()[0]}); "
                        "was config.yaml edited after training?") from None
    return model.eval()


def _save_tokenizer(cfg: RunConfig, out: Path):
    from transformers import BertTokenizerFast

    tok = BertTokenizerFast(tokenizer_object=load_tokenizer(Path(cfg.data.path) / TOKENIZER_FILE),
                            do_lower_case=True, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                            cls_token="[CLS]", mask_token="[MASK]",
                            model_max_length=cfg.model.max_position_embeddings)
    tok.save_pretrained(str(out))
    return tok


def _verify(model: BertForMaskedLM, tokenizer, out: Path) -> float:
    """Load the export with `transformers` and compare its logits with Graft's; raise above MAX_ABS_DIFF."""
    from transformers import AutoModelForMaskedLM

    hf_model = AutoModelForMaskedLM.from_pretrained(str(out)).eval()
    batch = tokenizer(CHECK_TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = model(batch["input_ids"], attention_mask=batch["attention_mask"])
        theirs = hf_model(**batch).logits
    keep = batch["attention_mask"].bool()  # padded positions carry no meaning
    diff = (ours[keep] - theirs[keep]).abs().max().item()
    if not diff <= MAX_ABS_DIFF:
        raise RuntimeError(f"export check failed: transformers' logits differ from Graft's by {diff:.3g} "
                           f"(limit {MAX_ABS_DIFF}); the staging directory {out} is kept for inspection")
    return diff


def _write_model_card(cfg: RunConfig, run_dir: Path, ckpt: Path, out: Path, name: str) -> None:
    manifest = Manifest.load(cfg.data.path)
    metrics = read_metrics(run_dir) if (run_dir / "metrics.jsonl").is_file() else {}
    last = metrics[max(metrics)] if metrics else {}
    card = f"""---
library_name: transformers
pipeline_tag: fill-mask
---
# BERT-style masked language model trained with Graft

- Checkpoint: `{ckpt.name}` of run `{run_dir.resolve()}`
- Data: {manifest.total_documents:,} documents, {manifest.total_tokens:,} tokens, vocabulary {manifest.vocab_size:,}
- Final training loss: {last.get('loss', float('nan')):.4f} at step {last.get('step', '?')}

```python
from transformers import pipeline
fill = pipeline("fill-mask", model="{name}")
fill("The [MASK] function returns the length of an object.")
```

## Training config
```yaml
{OmegaConf.to_yaml(OmegaConf.structured(cfg)).strip()}
```
"""
    (out / "README.md").write_text(card)
