"""`graft eval`: held-out loss over long documents, read segment by segment with and without memory.

Each document of the held-out dataset that spans at least `min_segments` segments is cut into consecutive
segments (the run's data.seq_len); documents run side by side as the rows of a batch, each row one lane.
Encoders are scored by MLM at 15% masking; encoder-decoders by their run's objective, T5's span corruption
or BART's text infilling (the loss over the decoder's targets; the encoder carries the memory). The noise is
fixed (from the run's seed and the document's place), and the loss is averaged per segment index, so the
report shows the loss at each distance into the document: with memory it should fall further along a
document than without.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F

from data_pipeline.collators.mlm import IGNORE, MLMCollator, MLMConfig
from data_pipeline.errors import UserError
from data_pipeline.packing import SegmentBatch
from data_pipeline.shards import Manifest, open_shard
from pretrain import checkpoint
from pretrain.config import load_config
from pretrain.models import build_model
from pretrain.models.memory import MemoryCache
from pretrain.objectives import OBJECTIVES
from pretrain.objectives.base import CollatorContext
from pretrain.run_dir import CONFIG_FILE

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402  (after choosing the file-only backend)

RESULT_FILE, PLOT_FILE = "long_eval.json", "long_eval.png"
SEQ2SEQ_LOSSES = ("span_corruption", "text_infilling")  # encoder-decoder objectives whose collator marks documents


def long_documents(data: Path, length: int, min_segments: int, max_documents: int) -> np.ndarray:
    """[D, S, length] token ids: the first S = min_segments segments of each long enough document."""
    manifest = Manifest.load(data)
    docs = []
    for info in manifest.shards:
        shard = open_shard(data, info, np.dtype(manifest.dtype), verify=True)
        bounds = list(shard.offsets.astype(np.int64)) + [len(shard.tokens)]
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            if end - start >= min_segments * length:
                docs.append(np.asarray(shard.tokens[start:start + min_segments * length], dtype=np.int64))
            if len(docs) == max_documents:
                break
    if not docs:
        raise UserError(f"{data} has no document of {min_segments} segments of {length} tokens; use longer "
                        "held-out documents or fewer --segments")
    return np.stack(docs).reshape(len(docs), min_segments, length)


def evaluate_long(run_dir: Path, data: Path, mem_len: int | None = None, segments: int = 8,
                  max_documents: int = 64, batch: int = 16, mask_seed: int | None = None) -> dict:
    """The report (see the module docstring); `mask_seed`: the masking noise's seed (default: the run's), the
    same for runs to be compared on the same masked positions."""
    cfg = load_config(run_dir / CONFIG_FILE)
    if mem_len is not None:
        cfg.model = dataclasses.replace(cfg.model, recurrence=dataclasses.replace(cfg.model.recurrence,
                                                                                  mem_len=mem_len))
    if cfg.model.positions != "xl" and cfg.model.family != "t5":
        raise UserError(f"{run_dir}: model.positions={cfg.model.positions} cannot attend to a memory; `graft eval` "
                        "compares memory with none for models with relative positions (model.positions=xl)")
    if not cfg.model.recurrence.mem_len:
        raise UserError(f"{run_dir} trained without memory (model.recurrence.mem_len=0); pass --mem-len N to "
                        "evaluate it with a memory of N positions")
    latest = checkpoint.latest_checkpoint(run_dir)
    if latest is None:
        raise UserError(f"{run_dir} has no complete checkpoint to evaluate")
    collate, loss_name = _collator(cfg, data, cfg.seed if mask_seed is None else mask_seed)
    docs = long_documents(data, collate.raw_length, segments, max_documents)
    model = build_model(cfg.model)
    model.load_state_dict(checkpoint.read_model_weights(latest), strict=True)
    model.eval()
    report = {"run_dir": str(run_dir), "checkpoint": latest.name, "data": str(data), "documents": len(docs),
              "segment_tokens": collate.raw_length, "mem_len": cfg.model.recurrence.mem_len, "loss": loss_name}
    for name, use_memory in (("with_memory", True), ("without_memory", False)):
        losses, counts = np.zeros(segments), np.zeros(segments)
        for first in range(0, len(docs), batch):
            rows = docs[first:first + batch]
            cache = MemoryCache() if use_memory and cfg.model.recurrence.mem_len else None
            for s in range(segments):
                starts = np.zeros((len(rows), collate.raw_length), dtype=bool)
                starts[:, 0] = s == 0  # each document begins at its first segment
                indices = (first + np.arange(len(rows))) * segments + s  # fixed masking noise per place
                out = collate(SegmentBatch(indices, rows[:, s], starts))
                labels = out["labels"]
                with torch.no_grad():
                    logits = model({**out, "memory": cache, "positions": labels != IGNORE}).logits
                loss = F.cross_entropy(logits.float(), labels[labels != IGNORE], reduction="sum")
                losses[s] += float(loss)
                counts[s] += int((labels != IGNORE).sum())
        report[name] = [round(v, 5) for v in (losses / counts).tolist()]
    return report


def _collator(cfg, data: Path, seed: int):
    """(collator marking documents, the loss's name): MLM at 15% for encoders, the run's own objective for
    encoder-decoders."""
    manifest = Manifest.load(data)
    if not cfg.model.is_encoder_decoder:
        return MLMCollator(MLMConfig(), manifest.special_tokens, manifest.vocab_size, cfg.data.seq_len, seed,
                           doc_index=True), "mlm"
    if cfg.objective.name not in SEQ2SEQ_LOSSES:
        raise UserError(f"graft eval scores {cfg.model.family} by {' or '.join(SEQ2SEQ_LOSSES)}; this run trained "
                        f"{cfg.objective.name}, whose collator does not mark documents")
    context = CollatorContext(manifest, cfg.data.seq_len, seed, str(data), recurrent=True)
    return OBJECTIVES[cfg.objective.name].make_collator(cfg.objective, context), cfg.objective.name


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT_FILE).write_text(json.dumps(report, indent=1))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    tokens = report["segment_tokens"]
    x = [(i + 0.5) * tokens for i in range(len(report["with_memory"]))]
    ax.plot(x, report["with_memory"], marker="o", label=f"with memory (mem_len {report['mem_len']})")
    ax.plot(x, report["without_memory"], marker="s", label="without memory")
    ax.set_xlabel("position in the document (tokens; middle of each segment)")
    loss = report.get("loss", "mlm")
    ax.set_ylabel("held-out MLM loss (15% masked)" if loss == "mlm" else f"held-out {loss.replace('_', ' ')} loss")
    ax.set_title(f"{report['documents']} documents, {tokens}-token segments")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / PLOT_FILE, dpi=120)
    plt.close(fig)
