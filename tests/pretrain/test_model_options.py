"""Options beyond the standard architectures, and the streaming safetensors writer."""

import json

import pytest
import torch
import transformers

from pretrain.hf.convert import to_hf
from pretrain.hf.writer import INDEX_FILE, write_safetensors
from pretrain.models import build_model
from pretrain.models.config import ModelConfig
from pretrain.models.layers import set_layerdrop_step

SIZES = dict(vocab_size=99, hidden_size=32, num_layers=3, num_heads=4, intermediate_size=37,
             max_position_embeddings=40, hidden_dropout=0.0, attention_dropout=0.0)


def _grads(cfg: ModelConfig) -> dict:
    torch.manual_seed(0)
    model = build_model(cfg).train()
    ids = torch.randint(5, 99, (2, 10), generator=torch.Generator().manual_seed(0))
    kwargs = {"decoder_input_ids": ids[:, :6]} if cfg.is_encoder_decoder else {}
    model(ids, **kwargs).float().pow(2).mean().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", ["bert", "t5"])
def test_activation_checkpointing_gives_the_same_gradients(family):
    extra = dict(hidden_act="gelu_new", decoder_start_token_id=0) if family == "t5" else {}
    plain = _grads(ModelConfig(family=family, **SIZES, **extra))
    checkpointed = _grads(ModelConfig(family=family, **SIZES, **extra, activation_checkpointing=True))
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name])


def test_layerdrop_skips_layers_in_training_only():
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="bert", **SIZES, layerdrop=0.5))
    ids = torch.randint(5, 99, (2, 10))
    calls = []
    for i, layer in enumerate(model.encoder.stack.layers):
        layer.register_forward_hook(lambda *_, i=i: calls.append(i))
    model.train()
    ran = {}
    for step in range(8):
        set_layerdrop_step(model, 0, step)
        model(ids)
        ran[step], calls[:] = list(calls), []
    assert 0 < sum(map(len, ran.values())) < 8 * 3  # some layers dropped, not all
    assert len({tuple(r) for r in ran.values()}) > 1  # a new draw each step
    for step in (5, 2):  # the draw is a function of the step: the same again, in any order
        set_layerdrop_step(model, 0, step)
        model(ids)
        assert calls == ran[step]
        calls.clear()
    other_seed = []
    for step in range(8):
        set_layerdrop_step(model, 1, step)
        model(ids)
        other_seed.append(list(calls))
        calls.clear()
    assert other_seed != [ran[step] for step in range(8)]  # the run's seed: other draws
    model.eval()
    model(ids)
    assert len(calls) == 3


def test_layerdrop_draws_differently_in_each_stack():
    """An encoder and a decoder of the same depth must not skip the same layer positions every step."""
    from pretrain.models.layers import LayerStack

    model = build_model(ModelConfig(family="t5", **SIZES, layerdrop=0.5, decoder_start_token_id=0))
    encoder, decoder = [m for m in model.modules() if isinstance(m, LayerStack)]
    draws = []
    for step in range(8):
        set_layerdrop_step(model, 0, step)
        draws.append((encoder._kept_layers().tolist(), decoder._kept_layers().tolist()))
    assert any(a != b for a, b in draws)


def test_pre_ln_adds_a_final_norm_and_trains():
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="bert", **SIZES, pre_ln=True))
    assert model.encoder.final_norm is not None and model.encoder.stack.layers[0].pre_ln
    ids = torch.randint(5, 99, (4, 10))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    curve = []
    for _ in range(30):  # learn to reproduce a fixed batch: the loss must fall well below its start
        logits = model(ids)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1))
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())
        optimizer.step()
        optimizer.zero_grad()
        curve.append(loss.item())
    assert curve[-1] < 0.5 * curve[0], curve


def test_albert_shares_one_layer_across_the_depth():
    model = build_model(ModelConfig(family="albert", **SIZES, embedding_size=16, share_layers=True))
    assert len(model.encoder.stack.layers) == 1 and model.encoder.stack.depth == 3


def test_sharded_safetensors_load_in_transformers(tmp_path):
    cfg = ModelConfig(family="bert", **SIZES)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    part, state = to_hf(model.state_dict(), cfg)[0]
    names = list(state)
    files = write_safetensors(tmp_path, [(n, state[n].shape) for n in names], lambda i: state[names[i]],
                              max_shard_bytes=20_000)
    assert len(files) > 2 and (tmp_path / INDEX_FILE).is_file()
    (tmp_path / "config.json").write_text(json.dumps({"architectures": [part.architecture], **part.config}))
    hf = transformers.BertForMaskedLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(5, 99, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids).logits, model(ids))
