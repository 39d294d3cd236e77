"""Collator throughput: batches per second of Graft's collators versus transformers' for the same objective.

Both sides get the same token rows (segments of the bundled sample corpus, prepared in format 2 with the
WordPiece tokenizer) and the same batch shape (--batch rows of --seq-len tokens):

  mlm  Graft's MaskedLMCollator (unit token)       vs DataCollatorForLanguageModeling
  wwm  Graft's MaskedLMCollator (unit whole_word)  vs DataCollatorForLanguageModeling(whole_word_mask=True),
       given offset mappings that group the tokens into the same words
  plm  Graft's PermutationLMCollator                vs DataCollatorForPermutationLanguageModeling

Graft's collators take the loader's arrays (SegmentBatch); transformers' take their usual input, a list of
examples. Each is timed over the same batches, median of --rounds rounds.
Run: python bench/collators.py [--batch 32 --seq-len 512]
The last line printed is one JSON object: collator_vs_hf_mlm, collator_vs_hf_wwm, collator_vs_hf_plm (Graft's
batches/s over transformers'), and each side's batches/s.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.common import prepared_corpus  # noqa: E402
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
    args = parser.parse_args()

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
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
