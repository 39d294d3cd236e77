"""An MLM loss that reads only the logits runs the encoder's last layer at the masked positions alone: the same
logits and gradients as the full forward, for every encoder option that path supports."""

import pytest
import torch

from data_pipeline.collators.mlm import IGNORE
from pretrain.flops import batch_flops, encoder_layer_flops
from pretrain.models import build_model
from pretrain.models.config import ModelConfig
from pretrain.models.layers import position_index, set_layerdrop_step
from pretrain.objectives import ObjectiveConfig, reads_logits_only

SIZES = dict(vocab_size=99, hidden_size=32, num_layers=3, num_heads=4, intermediate_size=37,
             max_position_embeddings=40, hidden_dropout=0.0, attention_dropout=0.0)
OPTIONS = {
    "bert": {},
    "roberta": dict(family="roberta", pad_token_id=1),
    "albert": dict(family="albert", embedding_size=16, share_layers=True),
    "pre_ln": dict(pre_ln=True),
    "checkpointing": dict(activation_checkpointing=True),
}


def _batch(length: int = 12, padded: bool = True) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 99, (3, length), generator=g)
    positions = torch.rand(3, length, generator=g) < 0.4
    positions[1] = False
    positions[1, 3] = True  # rows with very different counts: the index pads the shorter ones
    attention_mask = torch.ones(3, length, dtype=torch.long)
    if padded:
        attention_mask[2, -4:] = 0
        positions[2, -4:] = False
    return {"input_ids": ids, "attention_mask": attention_mask, "positions": positions}


def _logits_and_grads(model, batch):
    model.zero_grad()
    logits = model(batch).logits
    logits.float().pow(2).sum().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(model, batch):
    full_logits, full_grads = _logits_and_grads(model, batch)
    out = model({**batch, "logits_only": True})
    assert out.hidden is None  # the sparse path ran (hidden is only left out there)
    sparse_logits, sparse_grads = _logits_and_grads(model, {**batch, "logits_only": True})
    torch.testing.assert_close(sparse_logits, full_logits)
    assert sparse_grads.keys() == full_grads.keys()
    for name in full_grads:
        torch.testing.assert_close(sparse_grads[name], full_grads[name], msg=name)


@pytest.mark.parametrize("option", OPTIONS)
def test_logits_only_gives_the_full_forwards_logits_and_gradients(option):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{"family": "bert", **SIZES, **OPTIONS[option]})).train()
    _assert_same(model, _batch())


def test_a_per_sample_mask_keeps_each_querys_own_row():
    """UniLM's [B, T, T] masks: a query at a masked position sees what its own row allows."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="bert", **SIZES)).train()
    batch = _batch(padded=False)
    causal = torch.ones(12, 12, dtype=torch.bool).tril()
    batch["attention_mask"] = torch.stack([causal, causal.T, torch.ones(12, 12, dtype=torch.bool)]).long()
    _assert_same(model, batch)


def test_layerdrop_of_the_last_layer_still_gives_the_full_forwards_logits():
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="bert", **SIZES, layerdrop=0.5)).train()
    for step in range(8):  # some of these steps drop the last layer, some keep it
        set_layerdrop_step(model, 0, step)
        _assert_same(model, _batch())


def test_without_masked_positions_or_with_the_pair_head_the_forward_is_the_full_one():
    torch.manual_seed(0)
    batch = {**_batch(), "logits_only": True}
    model = build_model(ModelConfig(family="bert", **SIZES)).train()
    none = model({**batch, "positions": torch.zeros_like(batch["positions"])})
    assert none.logits.shape == (0, 99) and none.hidden is not None
    paired = build_model(ModelConfig(family="bert", **SIZES, head="pretraining")).train()
    assert paired(batch).hidden is not None and paired(batch).pair_logits is not None


def test_position_index_lists_each_rows_positions_in_order():
    positions = torch.tensor([[0, 1, 0, 1, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    index, kept = position_index(positions)
    assert index.shape == (3, 3)
    assert index[kept].tolist() == [1, 3, 4, 0]
    x = torch.arange(15.0).view(3, 5, 1)
    assert x.gather(1, index[..., None])[kept].flatten().tolist() == x[positions].flatten().tolist()


def test_the_mlm_objective_asks_for_logits_only_and_its_flops_count_the_sparse_last_layer():
    assert reads_logits_only(ObjectiveConfig(name="mlm")) and not reads_logits_only(ObjectiveConfig(name="mlm_nsp"))
    cfg = ModelConfig(family="bert", **SIZES)
    labels = torch.full((2, 10), IGNORE)
    labels[:, :3] = 7
    batch = {"input_ids": torch.ones(2, 10, dtype=torch.long), "labels": labels}
    dense, sparse = batch_flops(cfg, [batch]), batch_flops(cfg, [batch], logits_only=True)
    d, f = cfg.hidden_size, cfg.intermediate_size
    # Per sample, the last layer's queries, output and feed-forward run on 3 of 10 tokens; K and V on all 10.
    skipped = 2 * (10 - 3) * (encoder_layer_flops(d, f, 10) - 6 * 2 * d * d)
    assert dense - sparse == pytest.approx(skipped)
    paired = ModelConfig(family="bert", **SIZES, head="pretraining")  # its forward is the full one
    assert batch_flops(paired, [batch], logits_only=True) == batch_flops(paired, [batch])
