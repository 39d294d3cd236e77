"""The FLOPs formula behind MFU, against hand-computed figures for BERT-base."""

import pytest
import torch

from pretrain.flops import batch_flops, encoder_decoder_flops, encoder_layer_flops, flops_per_sample
from pretrain.models.bert import BertConfig


def test_bert_base_per_sample():
    cfg = BertConfig()  # BERT-base: d 768, f 3072, 12 layers, vocabulary 30522
    d, f, t, layers, vocab = 768, 3072, 512, 12, 30522
    dense = 6 * (4 * d * d + 2 * d * f)  # 6 x 7.08M weights per layer
    attention = 6 * 2 * t * d
    expected = layers * t * (dense + attention) + 6 * (d * d + d * vocab) * 0.15 * t
    assert flops_per_sample(cfg, t, 0.15 * t) == pytest.approx(expected)
    assert expected == pytest.approx(3.0e11, rel=0.05)  # the familiar ~6 x 85M x 512 plus attention and head


def test_encoder_decoder_counts_cross_attention():
    d, f, layers, vocab = 768, 2048, 12, 32128
    with_cross = encoder_decoder_flops(d, f, layers, layers, 512, 114, vocab, gated=True)
    decoder_self = layers * 114 * encoder_layer_flops(d, f, 114, gated=True)
    encoder = layers * 512 * encoder_layer_flops(d, f, 512, gated=True)
    cross = layers * 6 * (2 * d * d * 114 + 2 * d * d * 512 + 2 * 512 * d * 114)
    assert with_cross == pytest.approx(encoder + decoder_self + cross + 6 * d * vocab * 114)


def test_batch_flops_counts_the_head_on_labelled_positions_only():
    cfg = BertConfig(vocab_size=100, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16)
    labels = torch.full((2, 10), -100)
    labels[0, :3] = 1
    batch = {"input_ids": torch.zeros(2, 10, dtype=torch.long), "labels": labels}
    assert batch_flops(cfg, [batch, batch]) == pytest.approx(2 * 2 * flops_per_sample(cfg, 10, 1.5))
