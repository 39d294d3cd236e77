"""The model interfaces on their own: attention with a memory and any mask, position schemes with offsets,
layer stacks with per-layer state."""

import pytest
import torch

from pretrain.models.attention import Attention, additive, causal_mask
from pretrain.models.layers import LayerStack, TransformerLayer, set_layerdrop_step
from pretrain.models.positions import AbsolutePositions, PositionScheme, T5Buckets

H, HEADS = 16, 4


def _attention(seed: int = 0) -> Attention:
    torch.manual_seed(seed)
    return Attention(H, HEADS, dropout=0.0).eval()


def test_attention_with_memory_equals_attention_over_the_concatenation_and_leaves_the_memory_without_gradient():
    attn = _attention()
    g = torch.Generator().manual_seed(0)
    memory = torch.randn(2, 3, H, generator=g, requires_grad=True)
    x = torch.randn(2, 5, H, generator=g, requires_grad=True)
    mask = causal_mask(5, None, x.device, memory_length=3)
    assert mask.shape == (1, 1, 5, 8)
    out = attn(x, mask, memory=memory)

    # The same queries over [memory; x] as one sequence: the rows of x, under the same causal mask.
    full = torch.cat([memory, x], dim=1)
    whole = attn(full, torch.ones(8, 8, dtype=torch.bool).tril()[None, None])[:, 3:]
    torch.testing.assert_close(out, whole)
    out.sum().backward()
    assert memory.grad is None and x.grad is not None and x.grad.abs().sum() > 0


def test_causal_mask_with_memory_sees_the_whole_memory_and_no_later_token():
    mask = causal_mask(3, torch.tensor([[1, 1, 0]]), "cpu", memory_length=2)[0, 0]
    assert mask.tolist() == [[True, True, True, False, False],
                             [True, True, True, True, False],
                             [True, True, True, True, False]]


def test_a_per_sample_mask_reaches_sdpa_and_changes_exactly_the_rows_it_masks():
    attn = _attention()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, H, generator=g)
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    mask[1, 2, 3] = False  # sample 1, query 2 may not see key 3
    with torch.no_grad():
        plain, masked = attn(x), attn(x, mask[:, None])
        # query 2 of sample 1 over keys 0-2 only: a row attending to a 3-token prefix
        prefix = attn(x[1:, :3])[:, 2]
    changed = (plain - masked).abs().amax(-1) > 0
    assert changed.tolist() == [[False] * 4, [False, False, True, False]]
    torch.testing.assert_close(masked[1, 2], prefix[0])


def test_a_score_term_is_added_to_the_scaled_scores():
    """A content-dependent term (Transformer-XL's slot): here u . k, checked against attention by hand."""
    attn = _attention()
    g = torch.Generator().manual_seed(2)
    x, u = torch.randn(1, 3, H, generator=g), torch.randn(HEADS, H // HEADS, generator=g)
    scale = (H // HEADS) ** -0.5
    score = lambda q, k: scale * torch.einsum("hd,bhsd->bhs", u, k)[:, :, None, :]  # noqa: E731
    with torch.no_grad():
        out = attn(x, torch.ones(1, 1, 3, 3, dtype=torch.bool), score=score)
        q = attn.query(x).view(1, 3, HEADS, -1).transpose(1, 2)
        k = attn.key(x).view(1, 3, HEADS, -1).transpose(1, 2)
        v = attn.value(x).view(1, 3, HEADS, -1).transpose(1, 2)
        weights = ((q + u[None, :, None]) @ k.transpose(-1, -2) * scale).softmax(-1)
        expected = attn.output((weights @ v).transpose(1, 2).reshape(1, 3, H))
    torch.testing.assert_close(out, expected)


def test_absolute_positions_at_offset_zero_are_the_embedding_rows_and_shift_with_an_offset():
    torch.manual_seed(0)
    bart = AbsolutePositions(12, H, start=2)
    ids = torch.zeros(2, 4, dtype=torch.long)
    torch.testing.assert_close(bart.embedding(ids), bart.weight[2:6])
    torch.testing.assert_close(bart.embedding(ids, offset=3), bart.weight[5:9])
    with pytest.raises(ValueError, match="sequence length 11 exceeds model.max_position_embeddings \\(10\\)"):
        bart.embedding(ids, offset=7)

    roberta = AbsolutePositions(12, H, padding_idx=1, after_padding=True)
    ids = torch.tensor([[5, 6, 7, 1]])  # the last is padding
    assert roberta.ids(ids).tolist() == [[2, 3, 4, 1]]  # as transformers' create_position_ids_from_input_ids
    assert roberta.ids(ids, offset=4).tolist() == [[6, 7, 8, 1]]


@pytest.mark.parametrize("bidirectional", [True, False])
def test_t5_buckets_at_offset_zero_are_transformers_and_depend_only_on_the_distance(bidirectional):
    from transformers.models.t5.modeling_t5 import T5Attention

    scheme = T5Buckets(32, 128, HEADS, bidirectional)
    relative = torch.arange(-200, 200)
    expected = T5Attention._relative_position_bucket(relative, bidirectional, 32, 128)
    assert torch.equal(scheme.bucket(relative), expected)
    base = scheme.attention_bias(5, 7)
    assert base.shape == (1, HEADS, 5, 7)
    positions = torch.arange(7)[None, :] - torch.arange(5)[:, None]
    assert torch.equal(base, scheme.bias(scheme.bucket(positions)).permute(2, 0, 1)[None])
    # queries at 10.., keys (3 of memory first) at 7..: distances shift by key_offset - query_offset = -3
    shifted = scheme.attention_bias(5, 7, query_offset=10, key_offset=7)
    assert torch.equal(shifted, scheme.bias(scheme.bucket(positions - 3)).permute(2, 0, 1)[None])
    assert torch.equal(scheme.attention_bias(5, 7, 100, 100), base)  # only the distance matters


def test_the_base_scheme_contributes_nothing():
    scheme = PositionScheme()
    assert scheme.embedding(torch.zeros(1, 3, dtype=torch.long)) is None
    assert scheme.attention_bias(3, 3) is None and scheme.attention_score(3, 3) is None


def _stack(depth=3, **options) -> LayerStack:
    torch.manual_seed(0)
    return LayerStack(lambda: TransformerLayer(H, HEADS, 32, 0.0, 0.0, 1e-12), depth, **options)


@pytest.mark.parametrize("options", [{}, {"share": True}, {"checkpointing": True}, {"layerdrop": 0.5}],
                         ids=["plain", "shared", "checkpointing", "layerdrop"])
def test_a_stack_returns_one_state_per_layer_and_passes_each_layer_its_own(options):
    stack = _stack(**options).train()
    set_layerdrop_step(stack, 0, 1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, H, generator=g)
    memories = [torch.randn(2, 2, H, generator=g) for _ in range(3)]
    out = stack(x, mask=torch.ones(1, 1, 4, 6, dtype=torch.bool), states=memories, keep_states=True)
    assert len(out.states) == 3
    torch.testing.assert_close(out.states[0], x)
    # each state is what entered that layer: replaying the layers one by one gives the same
    kept = stack._kept_layers() if options.get("layerdrop") else torch.ones(3, dtype=torch.bool)
    if options.get("layerdrop"):
        assert 0 < int(kept.sum()) < 3  # the seed chosen so that this draw drops some layer, not all
    h = x
    for i in range(3):
        torch.testing.assert_close(out.states[i], h)
        layer = stack.layers[i % len(stack.layers)]
        h = layer(h, mask=torch.ones(1, 1, 4, 6, dtype=torch.bool), state=memories[i]) if kept[i] else h
    torch.testing.assert_close(out.hidden, h)
    assert stack(x, mask=None).states is None  # states are kept only when asked


def test_the_memory_changes_the_output_and_no_memory_is_no_memory():
    stack = _stack().eval()
    x = torch.randn(1, 4, H, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        plain = stack(x).hidden
        none = stack(x, states=[None, None, None]).hidden
        memory = stack(x, states=[torch.randn(1, 2, H)] * 3).hidden
    assert torch.equal(plain, none)
    assert not torch.allclose(plain, memory)


def test_additive_mask_is_zero_where_attended():
    mask = torch.tensor([True, False])
    assert additive(mask, torch.float32).tolist() == [0.0, torch.finfo(torch.float32).min]
