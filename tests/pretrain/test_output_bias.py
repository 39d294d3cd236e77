"""model.output_bias_init=unigram: the MLM head's bias starts at the training data's log unigram probabilities."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from data_pipeline.collators.mlm import IGNORE
from data_pipeline.packing import PackedSegments
from data_pipeline.shards import Manifest, open_shard
from pretrain.config import load_config
from pretrain.construction import construct_model
from pretrain.objectives import build_objective
from pretrain.objectives.base import CollatorContext
from pretrain.output_bias import training_unigram, unigram_log_probs

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


def _counts(dataset: Path) -> np.ndarray:
    manifest = Manifest.load(dataset)
    return sum(np.bincount(open_shard(dataset, s, np.dtype(manifest.dtype)).tokens, minlength=manifest.vocab_size)
               for s in manifest.shards)


def test_unigram_is_the_smoothed_token_frequency(small_dataset):
    counts = _counts(small_dataset)
    segments = PackedSegments(small_dataset, 64)
    log_probs = unigram_log_probs(segments, len(counts))
    used = len(segments) * 64  # whole segments: the tail of the last document is left out
    assert used <= counts.sum() < used + 64
    torch.testing.assert_close(log_probs.exp().sum(), torch.tensor(1.0))
    assert int(log_probs.argmax()) == int(counts.argmax())
    frequent, unseen = int(counts.argmax()), int(np.flatnonzero(counts == 0)[0])  # [MASK] is never in the data
    # add-one smoothing: the ratio of two tokens' probabilities is that of their counts plus one (to the tail)
    assert math.isclose(float(log_probs[frequent] - log_probs[unseen]), math.log(counts[frequent] + 1), rel_tol=1e-3)
    few = unigram_log_probs(segments, len(counts), max_tokens=640)  # a budget: the first 10 segments only
    first = segments.read_batch(np.arange(10), np.arange(10)).tokens.ravel()
    expected = np.log((np.bincount(first, minlength=len(counts)) + 1) / (len(first) + len(counts)))
    torch.testing.assert_close(few, torch.from_numpy(expected).float())


def _start_loss(dataset: Path, init: str) -> tuple[float, float]:
    """(the fresh model's MLM loss on 8 batches, the unigram cross-entropy of their labels)."""
    cfg = load_config(TINY, [f"data.path={dataset}", "train.run_dir=unused", f"model.output_bias_init={init}"])
    collate, loss_fn = build_objective(cfg.objective, CollatorContext(Manifest.load(dataset), cfg.data.seq_len,
                                                                     cfg.seed, str(dataset)))
    segments = PackedSegments(dataset, collate.raw_length)
    torch.manual_seed(0)
    bias = training_unigram(cfg.data, cfg.model.vocab_size) if init == "unigram" else None
    model = construct_model(cfg.model, cfg.engine, 1, output_bias=bias).eval()
    log_probs = unigram_log_probs(segments, cfg.model.vocab_size)
    losses, unigram = [], []
    with torch.no_grad():
        for b in range(8):
            rows = np.arange(b * 16, (b + 1) * 16)
            batch = collate(segments.read_batch(rows, rows))
            losses.append(float(loss_fn(model, batch)))
            labels = batch["labels"][batch["labels"] != IGNORE]
            unigram.append(float(-log_probs[labels].mean()))
    return float(np.mean(losses)), float(np.mean(unigram))


def test_a_unigram_start_is_at_the_unigram_loss_and_a_zero_start_at_uniform(small_dataset):
    loss, unigram = _start_loss(small_dataset, "unigram")
    assert abs(loss - unigram) < 0.05, (loss, unigram)
    vocab = Manifest.load(small_dataset).vocab_size
    loss, unigram = _start_loss(small_dataset, "zero")
    assert abs(loss - math.log(vocab)) < 0.05 and loss > unigram + 1


def test_families_without_an_mlm_bias_refuse_it(small_dataset):
    with pytest.raises(Exception, match="model.output_bias_init=unigram .* t5 has not"):
        load_config(TINY, [f"data.path={small_dataset}", "train.run_dir=unused", "model.family=t5",
                           "model.output_bias_init=unigram"])
    with pytest.raises(Exception, match="model.output_bias_init 'prior' is not known; choose one of zero, unigram"):
        load_config(TINY, [f"data.path={small_dataset}", "train.run_dir=unused", "model.output_bias_init=prior"])
