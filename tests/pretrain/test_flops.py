"""The FLOPs formula behind MFU, against hand-computed figures for each kind of model."""

import pytest
import torch

from dataclasses import replace

from pretrain.flops import batch_flops, flops_per_sample
from pretrain.models.bert import BertConfig
from pretrain.models.config import ModelConfig


def test_bert_base_per_sample():
    cfg = BertConfig()  # BERT-base: d 768, f 3072, 12 layers, vocabulary 30522
    d, f, t, layers, vocab = 768, 3072, 512, 12, 30522
    dense = 6 * (4 * d * d + 2 * d * f)  # 6 x 7.08M weights per layer
    attention = 6 * 2 * t * d
    expected = layers * t * (dense + attention) + 6 * (d * d + d * vocab) * 0.15 * t
    assert flops_per_sample(cfg, t, 0.15 * t) == pytest.approx(expected)
    assert expected == pytest.approx(3.0e11, rel=0.05)  # the familiar ~6 x 85M x 512 plus attention and head


T5_BASE = ModelConfig(family="t5", vocab_size=32128, hidden_size=768, num_layers=12, num_heads=12, head_dim=64,
                      intermediate_size=2048, decoder_start_token_id=0, eos_token_id=1)


def test_t5_counts_encoder_decoder_cross_attention_and_the_gated_feed_forward():
    d, f, layers, vocab, enc, dec = 768, 2048, 12, 32128, 512, 114
    encoder = layers * enc * 6 * (4 * d * d + 2 * enc * d + 3 * d * f)
    decoder_self = layers * dec * 6 * (4 * d * d + 2 * dec * d + 3 * d * f)
    cross = layers * 6 * (2 * d * d * dec + 2 * d * d * enc + 2 * enc * d * dec)
    expected = encoder + decoder_self + cross + 6 * d * vocab * dec
    assert flops_per_sample(T5_BASE, enc, dec, decoder_len=dec) == pytest.approx(expected)
    # BART's feed-forward is not gated: one d x f matrix less per layer and token
    bart = replace(T5_BASE, family="bart", head_dim=None)
    ungated = expected - 6 * d * f * layers * (enc + dec)
    assert flops_per_sample(bart, enc, dec, decoder_len=dec) == pytest.approx(ungated)


def test_t5_attention_width_can_differ_from_the_hidden_size():
    narrow = replace(T5_BASE, head_dim=32)  # attention width 384 against d 768
    d, a, f, t = 768, 384, 2048, 64
    expected = 2 * 12 * t * 6 * (4 * d * a + 2 * t * a + 3 * d * f) + 12 * 6 * (2 * d * a * t * 2 + 2 * t * a * t)
    assert flops_per_sample(narrow, t, 0, decoder_len=t) == pytest.approx(expected)


def test_electra_counts_generator_and_discriminator():
    cfg = ModelConfig(family="electra", vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4,
                      intermediate_size=256, embedding_size=32, generator_hidden_size=16, generator_num_heads=1,
                      generator_intermediate_size=64)
    t, masked = 10, 2
    e, v = 32, 1000
    generator = 2 * t * 6 * (4 * 16 * 16 + 2 * t * 16 + 2 * 16 * 64) + 6 * e * 16 * t + 6 * (16 * e + e * v) * masked
    discriminator = 2 * t * 6 * (4 * 64 * 64 + 2 * t * 64 + 2 * 64 * 256) + 6 * e * 64 * t + 6 * (64 * 64 + 64) * t
    assert flops_per_sample(cfg, t, masked) == pytest.approx(generator + discriminator)


def test_batch_flops_of_an_encoder_decoder_batch_uses_the_decoder_length_and_labels():
    cfg = replace(T5_BASE, vocab_size=100, hidden_size=8, num_layers=1, num_heads=2, head_dim=4, intermediate_size=16)
    labels = torch.full((2, 5), -100)
    labels[:, :4] = 1
    batch = {"input_ids": torch.zeros(2, 12, dtype=torch.long),
             "decoder_input_ids": torch.zeros(2, 5, dtype=torch.long),
             "labels": labels}
    assert batch_flops(cfg, [batch]) == pytest.approx(2 * flops_per_sample(cfg, 12, 4, decoder_len=5))
    assert flops_per_sample(cfg, 12, 4, decoder_len=5) > flops_per_sample(cfg, 12, 4, decoder_len=1)


def test_batch_flops_counts_the_head_on_labelled_positions_only():
    cfg = BertConfig(vocab_size=100, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16)
    labels = torch.full((2, 10), -100)
    labels[0, :3] = 1
    batch = {"input_ids": torch.zeros(2, 10, dtype=torch.long), "labels": labels}
    assert batch_flops(cfg, [batch, batch]) == pytest.approx(2 * 2 * flops_per_sample(cfg, 10, 1.5))
