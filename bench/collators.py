"""Collator throughput: batches per second of Graft's collators versus transformers' for the same objective.

Both sides get the same token rows (segments of the bundled sample corpus, prepared in format 2 with the
WordPiece tokenizer) and the same batch shape (--batch rows of --seq-len tokens):

  mlm  Graft's MaskedLMCollator (unit token)       vs DataCollatorForLanguageModeling
  wwm  Graft's MaskedLMCollator (unit whole_word)  vs DataCollatorForLanguageModeling(whole_word_mask=True),
       given offset mappings that group the tokens into the same words
  plm  Graft's PermutationLMCollator                vs DataCollatorForPermutationLanguageModeling

Graft's collators take the loader's arrays (SegmentBatch); transformers' take their usual input, a list of
examples. Each is timed over the same batches, median of --rounds rounds.

For every objective without a transformers collator (each of `graft objectives` but mlm), the share of a
training step spent in its collator, `collator_step_fraction_<objective>` = collate / (collate + step): the
objective's preset (configs/objectives/, or the family's tiny model) at the quickstart model's sizes,
sequence and micro-batch (read from configs/quickstart.yaml), one micro-batch collated from the
loader's arrays vs one plain PyTorch training step on it (forward, backward, AdamW: a lower bound of the
engine's step, so the share is an upper bound) on one thread, as each of the quickstart's ranks runs (torchrun
gives every rank OMP_NUM_THREADS=1; the collator is single-threaded numpy either way), medians of --steps;
masked_lm is measured as SpanBERT's spans with SBO, its costliest unit.
Run: python bench/collators.py [--batch 32 --seq-len 512] [--only-fractions] [--objectives NAME ...]
The last line printed is one JSON object: collator_vs_hf_mlm, collator_vs_hf_wwm, collator_vs_hf_plm (Graft's
batches/s over transformers'), each side's batches/s, and collator_step_fraction_<objective> for each objective.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.common import SAMPLE_CORPUS, prepared_corpus  # noqa: E402
from data_pipeline.collators.masked_lm import MaskedLMCollator, MaskingConfig  # noqa: E402
from data_pipeline.collators.permutation_lm import PermutationLMCollator, PermutationLMConfig  # noqa: E402
from data_pipeline.packing import PackedSegments  # noqa: E402


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def timed(fn, batches, rounds: int) -> float:
    """Median batches per second of `fn` over `batches`."""
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        for b in batches:
            fn(b)
        rates.append(len(batches) / (time.perf_counter() - start))
    return statistics.median(rates)


def offsets_for(words: np.ndarray, special: np.ndarray) -> np.ndarray:
    """[T, 2] character offsets under which HF's whole-word grouping (a gap before a new word) gives `words`."""
    out = np.zeros((len(words), 2), dtype=np.int64)
    end = 0
    for t in range(len(words)):
        if special[t]:
            continue
        start = end + 1 if words[t] else end
        out[t] = start, start + 1
        end = start + 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32, help="rows per batch (default: %(default)s)")
    parser.add_argument("--seq-len", type=int, default=512, help="tokens per row (default: %(default)s)")
    parser.add_argument("--batches", type=int, default=10, help="batches timed per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the median counts (default: %(default)s)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "graft_bench_collators_v2",
                        help="where the prepared corpus is kept between runs")
    parser.add_argument("--steps", type=int, default=5, help="step-fraction: steps timed per objective "
                                                             "(default: %(default)s)")
    parser.add_argument("--only-fractions", action="store_true", help="measure the step fractions only")
    parser.add_argument("--objectives", nargs="+", metavar="NAME",
                        help="step fractions of these objectives only (default: every one)")
    args = parser.parse_args()
    figures = {} if args.only_fractions else versus_transformers(args)
    figures.update(step_fractions(args.work, args.steps, args.objectives))
    print(json.dumps(figures))


def versus_transformers(args) -> dict:
    from transformers import (DataCollatorForLanguageModeling, DataCollatorForPermutationLanguageModeling,
                              PreTrainedTokenizerFast)

    data = prepared_corpus(args.work, last=2000)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(data / "tokenizer.json"), pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", unk_token="[UNK]")
    segments = PackedSegments(data, args.seq_len - 2, cache_dir=str(args.work / "cache"))
    manifest = segments.manifest
    ids, vocab = manifest.special_tokens, manifest.vocab_size
    rng = np.random.default_rng(0)
    batches = [segments.read_batch(rng.integers(0, len(segments), args.batch), np.arange(args.batch) + i * args.batch)
               for i in range(args.batches)]
    mlm = MaskedLMCollator(MaskingConfig(), ids, vocab, args.seq_len, 0)
    wwm = MaskedLMCollator(MaskingConfig(unit="whole_word"), ids, vocab, args.seq_len, 0)
    rows = [mlm.rows(b) for b in batches]  # the same tokens, laid out [CLS] ... [SEP], for transformers
    hf_mlm_examples = [[{"input_ids": r} for r in ids_.tolist()] for ids_, _ in rows]
    hf_wwm_examples = []
    for ids_, words in rows:
        special = np.isin(ids_, [ids["cls"], ids["sep"]])
        hf_wwm_examples.append([{"input_ids": r.tolist(), "offset_mapping": offsets_for(w, s).tolist()}
                                for r, w, s in zip(ids_, words, special, strict=True)])
    plm_len = args.seq_len - args.seq_len % 2  # HF's PLM needs an even length
    plm = PermutationLMCollator(PermutationLMConfig(), ids, plm_len, 0)
    plm_segments = PackedSegments(data, plm.raw_length, cache_dir=str(args.work / "cache"))
    plm_batches = [plm_segments.read_batch(rng.integers(0, len(plm_segments), args.batch), np.arange(args.batch))
                   for _ in range(args.batches)]
    # the same [CLS] ... [SEP] rows for transformers
    hf_plm_examples = [[torch.from_numpy(r) for r in plm.layout.rows(b)[0]] for b in plm_batches]

    hf_mlm = DataCollatorForLanguageModeling(tokenizer, seed=0)
    hf_wwm = DataCollatorForLanguageModeling(tokenizer, whole_word_mask=True, mask_replace_prob=1.0,
                                             random_replace_prob=0.0, seed=0)
    hf_plm = DataCollatorForPermutationLanguageModeling(tokenizer)
    figures = {}
    for name, ours, ours_in, theirs, theirs_in in (("mlm", mlm, batches, hf_mlm, hf_mlm_examples),
                                                   ("wwm", wwm, batches, hf_wwm, hf_wwm_examples),
                                                   ("plm", plm, plm_batches, hf_plm, hf_plm_examples)):
        torch.manual_seed(0)
        graft_rate = timed(ours, ours_in, args.rounds)
        hf_rate = timed(theirs, theirs_in, args.rounds)
        log(f"{name}: graft {graft_rate:.1f} batches/s, transformers {hf_rate:.1f} batches/s "
            f"({graft_rate / hf_rate:.1f}x)")
        figures[f"collator_vs_hf_{name}"] = round(graft_rate / hf_rate, 2)
        figures[f"graft_{name}_batches_per_s"] = round(graft_rate, 1)
        figures[f"hf_{name}_batches_per_s"] = round(hf_rate, 1)
    return figures


# The quickstart's model sizes, sequence and micro-batch, read from its config.
_QUICKSTART = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
QUICKSTART = {k: _QUICKSTART["model"][k] for k in ("hidden_size", "num_layers", "num_heads", "intermediate_size")}
QUICKSTART_SEQ, QUICKSTART_BATCH = _QUICKSTART["data"]["seq_len"], _QUICKSTART["engine"]["micro_batch_size"]
WITH_HF_COLLATOR = ("mlm",)  # DataCollatorForLanguageModeling (compared above)
FAMILY_PRESET = {"rtd": "models/electra-tiny", "span_corruption": "models/t5-tiny",
                 "text_infilling": "models/bart-tiny"}
OBJECTIVE_PRESET = {"masked_lm": "objectives/masked_lm_sbo"}


def objective_preset(name: str) -> Path | None:
    """The preset that trains objective `name`: its own in configs/objectives/, else the family's tiny model."""
    configs = REPO / "configs"
    chosen = OBJECTIVE_PRESET.get(name) or FAMILY_PRESET.get(name)
    if chosen:
        return configs / f"{chosen}.yaml"
    own = configs / "objectives" / f"{name}.yaml"
    return own if own.is_file() else None


def fraction_data(work: Path, name: str, family: str) -> Path:
    """A prepared corpus the objective reads: its family's tokenizer kind; pairs for tlm, languages for
    multilingual_mlm."""
    from data_pipeline.prepare import prepare

    kind = {"t5": "unigram", "bart": "bytelevel_bpe", "roberta": "bytelevel_bpe"}.get(family, "wordpiece")
    tag = {"tlm": "parallel", "multilingual_mlm": "multilingual"}.get(name, kind)
    out = work / f"fraction_{tag}"
    if (out / "manifest.json").is_file():
        return out
    work.mkdir(parents=True, exist_ok=True)
    with open(SAMPLE_CORPUS) as src:
        texts = [json.loads(line)["text"] for _, line in zip(range(600), src, strict=False)]
    raw = work / f"fraction_{tag}.jsonl"
    options = {}
    with open(raw, "w") as f:
        for i, text in enumerate(texts):
            other = " ".join(reversed(text.split()))  # a stand-in second language
            if tag == "parallel":
                f.write(json.dumps({"a": text[:800], "b": other[:800], "la": "en", "lb": "xx"}) + "\n")
                options = {"pair_fields": ("a", "b"), "language_fields": ("la", "lb")}
            elif tag == "multilingual":
                f.write(json.dumps({"text": text if i % 2 else other, "lang": "en" if i % 2 else "xx"}) + "\n")
                options = {"language_field": "lang"}
            else:
                f.write(json.dumps({"text": text}) + "\n")
    prepare([raw], out, vocab_size=4000, tokenizer_kind=kind, progress=False, **options)
    return out


def step_fractions(work: Path, steps: int, only: list[str] | None = None) -> dict:
    """collator_step_fraction_<objective> for every objective without a transformers collator (or those `only`
    names)."""
    from data_pipeline.loader import partner_segments
    from pretrain.config import load_config
    from pretrain.models import build_model
    from pretrain.models.objective_heads import attach_heads
    from pretrain.objectives import OBJECTIVES, build_objective, objective_heads
    from pretrain.objectives.base import CollatorContext

    torch.set_num_threads(1)  # one thread per rank, as the quickstart's 2 processes train on 2 cores
    figures = {}
    for name in only or OBJECTIVES:
        preset = objective_preset(name)
        if name in WITH_HF_COLLATOR or preset is None:
            continue
        family = yaml.safe_load(preset.read_text())["model"]["family"]
        data = fraction_data(work, name, family)
        sizes = {**QUICKSTART, "max_position_embeddings": QUICKSTART_SEQ + (2 if family == "roberta" else 0)}
        if family == "t5":
            sizes.pop("max_position_embeddings")
        overrides = [f"data.path={data}", f"train.run_dir={work / 'unused'}", f"data.seq_len={QUICKSTART_SEQ}",
                     "model.embedding_size=null", "model.head_dim=null", "model.num_decoder_layers=null",
                     "model.generator_hidden_size=null", "model.generator_num_heads=null",
                     "model.generator_intermediate_size=null",
                     *(f"model.{k}={v}" for k, v in sizes.items())]
        cfg = load_config(preset, overrides)
        context = CollatorContext(PackedSegments(data, 8).manifest, QUICKSTART_SEQ, cfg.seed, str(data),
                                  type_vocab_size=cfg.model.type_vocab_size)
        collate, loss_fn = build_objective(cfg.objective, context)
        segments = PackedSegments(data, collate.raw_length, cache_dir=str(work / "cache"))
        rng = np.random.default_rng(0)
        arrays = []
        for i in range(steps + 1):
            picked = rng.integers(0, len(segments), QUICKSTART_BATCH)
            indices = np.arange(QUICKSTART_BATCH) + i * QUICKSTART_BATCH
            batch = segments.read_batch(picked, indices)
            if getattr(collate, "wants_partner", False):
                batch.partner = segments.read_batch(partner_segments(0, indices, picked, len(segments)), indices)
            arrays.append(batch)
        torch.manual_seed(0)
        model = build_model(cfg.model)
        heads = objective_heads(cfg.objective)
        if heads is not None:
            attach_heads(model, heads(model))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        collate_s, step_s = [], []
        for i, batch in enumerate(arrays):
            start = time.perf_counter()
            tensors = collate(batch)
            middle = time.perf_counter()
            out = loss_fn(model, tensors)
            (out["loss"] if isinstance(out, dict) else out).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if i:  # the first is a warm-up
                collate_s.append(middle - start)
                step_s.append(time.perf_counter() - middle)
        c, s = statistics.median(collate_s), statistics.median(step_s)
        log(f"{name} ({preset.stem}, {family}): collate {c * 1e3:.1f} ms, step {s * 1e3:.1f} ms, "
            f"share {c / (c + s):.2%}")
        figures[f"collator_step_fraction_{name}"] = round(c / (c + s), 4)
    return figures


if __name__ == "__main__":
    main()
