"""Transformer-XL recurrence: a document read segment by segment with memory is the same computation as one
forward over the concatenated segments with a block mask (each segment sees itself and the previous one)."""

import pytest
import torch

from pretrain.models import build_model
from pretrain.models.config import ModelConfig, RecurrenceConfig
from pretrain.models.memory import Memory, MemoryCache, memory_mask, next_memory

T = 12  # segment length


def encoder_config(**kw) -> ModelConfig:
    return ModelConfig(family="bert", vocab_size=97, hidden_size=32, num_layers=3, num_heads=4, intermediate_size=64,
                       max_position_embeddings=64, positions="xl", recurrence=RecurrenceConfig(mem_len=T), **kw)


def t5_config() -> ModelConfig:
    return ModelConfig(family="t5", vocab_size=97, hidden_size=32, num_layers=3, num_heads=4, head_dim=8,
                       intermediate_size=64, hidden_act="gelu_new", layer_norm_eps=1e-6, decoder_start_token_id=0,
                       relative_attention_num_buckets=8, relative_attention_max_distance=20,
                       recurrence=RecurrenceConfig(mem_len=T))


def bart_config(**kw) -> ModelConfig:
    return ModelConfig(family="bart", vocab_size=97, hidden_size=32, num_layers=3, num_decoder_layers=2, num_heads=4,
                       intermediate_size=64, max_position_embeddings=64, decoder_start_token_id=2,
                       scale_embedding=True, positions="xl", recurrence=RecurrenceConfig(mem_len=T), **kw)


SEQ2SEQ = {"t5": t5_config, "bart": bart_config}


def block_mask(segments: int) -> torch.Tensor:
    """bool [1, 1, sT, sT]: segment i sees segments i - 1 and i."""
    seg = torch.arange(segments * T) // T
    return ((seg[None, :] == seg[:, None]) | (seg[None, :] == seg[:, None] - 1))[None, None]


def make(cfg: ModelConfig):
    torch.manual_seed(0)
    return build_model(cfg).eval()


@pytest.mark.parametrize("variant", [{}, {"pre_ln": True}, {"share_layers": True, "family": "albert",
                                                              "embedding_size": 16, "hidden_act": "gelu_new"}])
def test_encoder_segments_with_memory_equal_one_block_masked_forward(variant):
    cfg = encoder_config(**{k: v for k, v in variant.items() if k != "family"})
    if "family" in variant:
        cfg = ModelConfig(**{**cfg.__dict__, "family": variant["family"]})
    model = make(cfg)
    ids = torch.randint(5, 97, (2, 3 * T))
    cache, segmented = MemoryCache(), []
    with torch.no_grad():
        for s in range(3):
            segmented.append(model({"input_ids": ids[:, s * T:(s + 1) * T], "memory": cache}).logits)
            assert cache.memory.length == T  # mem_len = T: the last segment only
        enc = model.encoder
        x = model.embeddings(ids, None)
        x = enc.project(x) if enc.project is not None else x
        score = enc.relative.attention_score(3 * T, 3 * T)
        hidden = enc.stack(x, mask=block_mask(3), score=score).hidden
        hidden = enc.final_norm(hidden) if enc.final_norm is not None else hidden
        whole = model.mlm_logits(hidden)
    torch.testing.assert_close(torch.cat(segmented, dim=1), whole, rtol=1e-5, atol=1e-5)


def whole_encoder(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """T5's or BART's encoder over all of `ids` at once, attending as the bool `mask` allows."""
    stack, n = model.encoder, ids.shape[1]
    if model.config.family == "t5":
        full = stack.position_bias.attention_bias(n, n) + \
            torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
        return stack.dropout(stack.final_norm(stack.stack(model.shared(ids), mask=full).hidden))
    x = stack.dropout(stack.embed_norm(model.shared(ids) * model.embed_scale))
    return stack.stack(x, mask=mask, score=stack.positions.attention_score(n, n)).hidden


@pytest.mark.parametrize("family", SEQ2SEQ)
def test_seq2seq_encoder_segments_with_memory_equal_one_block_masked_forward(family):
    model = make(SEQ2SEQ[family]())
    ids = torch.randint(2, 97, (2, 3 * T))
    cache = MemoryCache()
    with torch.no_grad():
        segmented = torch.cat([model.encode(ids[:, s * T:(s + 1) * T], cache=cache) for s in range(3)], dim=1)
        whole = whole_encoder(model, ids, block_mask(3))
    torch.testing.assert_close(segmented, whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", SEQ2SEQ)
def test_seq2seq_decoder_sees_the_current_segment_and_trains_through_memory(family):
    model = make(SEQ2SEQ[family]()).train()
    cache = MemoryCache()
    ids = torch.randint(2, 97, (2, T))
    batch = {"input_ids": ids, "decoder_input_ids": ids[:, :5], "memory": cache}
    first = model(batch).logits
    second = model(batch).logits  # the same segment again, now with a memory: the encoder output differs
    assert first.shape == second.shape == (2, 5, 97)
    assert cache.memory.length == T and all(not t.requires_grad for t in cache.memory.layers)
    assert len(cache.memory.layers) == model.config.num_layers  # the encoder's layers only
    if family == "bart":  # the decoder's relative positions are its own, and causal
        with torch.no_grad():
            model.eval()
            longer = model({"input_ids": ids, "decoder_input_ids": ids[:, :7]}).logits
            shorter = model({"input_ids": ids, "decoder_input_ids": ids[:, :5]}).logits
        torch.testing.assert_close(longer[:, :5], shorter, rtol=1e-5, atol=1e-5)
        second.sum().backward()
        assert model.decoder.positions.position_bias.grad is not None


def test_no_gradient_reaches_the_memory():
    model = make(encoder_config()).train()
    layers = [torch.randn(2, T, 32, requires_grad=True) for _ in range(3)]
    cache = MemoryCache(Memory(layers, torch.ones(2, T, dtype=torch.bool)))
    model({"input_ids": torch.randint(5, 97, (2, T)), "memory": cache}).logits.sum().backward()
    assert all(t.grad is None for t in layers)
    assert model.encoder.relative.content_bias.grad is not None  # the position biases do train
    assert all(not t.requires_grad for t in cache.memory.layers)


def test_memory_of_another_document_is_not_attended():
    model = make(encoder_config())
    first, second = torch.randint(5, 97, (2, T)), torch.randint(5, 97, (2, T))
    with torch.no_grad():
        alone = model({"input_ids": second}).logits
        cache = MemoryCache()
        model({"input_ids": first, "memory": cache})
        # Both rows begin a new document at position 0 of the second segment: the memory is masked out.
        new_doc = torch.ones(2, T, dtype=torch.long)
        after = model({"input_ids": second, "memory": cache, "doc_index": new_doc}).logits
        cache2 = MemoryCache()
        model({"input_ids": first, "memory": cache2})
        continued = model({"input_ids": second, "memory": cache2}).logits
    torch.testing.assert_close(after, alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(continued, alone, atol=1e-4)  # the memory is read when the document continues
    assert not cache.memory.valid[:, :0].any()


def test_memory_mask_and_update_follow_documents_and_padding():
    valid = torch.tensor([[True, True, False, True]])
    memory = Memory([torch.zeros(1, 4, 2)], valid)
    doc_index = torch.tensor([[0, 0, 1, 1, 2]])  # documents begin at positions 2 and 4
    attention = torch.tensor([[1, 1, 1, 1, 0]])  # the last position is padding
    mask = memory_mask(memory, doc_index, attention, 5)[0, 0]
    expected_memory = doc_index[0, :, None].eq(0) & valid[0][None, :]
    assert torch.equal(mask[:, :4], expected_memory)
    assert torch.equal(mask[:, 4:], attention.bool().expand(5, 5))
    # A document began: the old memory is dropped; of the new positions only the open (last) document's
    # non-padded ones stay valid.
    new = next_memory(memory, [torch.ones(1, 5, 2)], doc_index, torch.ones(1, 5), mem_len=6)
    assert new.valid[0].tolist() == [False, False, False, False, False, True]
    assert new.layers[0].shape == (1, 6, 2)
    # No document began: the old memory stays as it was, the new positions are valid except padding.
    same_doc = next_memory(memory, [torch.ones(1, 5, 2)], torch.zeros(1, 5, dtype=torch.long), attention, mem_len=7)
    assert same_doc.valid[0].tolist() == [False, True, True, True, True, True, False]


def test_xl_positions_shift_with_offsets():
    rel = make(encoder_config()).encoder.relative
    q, k = torch.randn(1, 4, 5, 8), torch.randn(1, 4, 9, 8)
    # Queries at 4.. and keys at 0..: the same distances as queries at 10.. and keys at 6..
    torch.testing.assert_close(rel.attention_score(5, 9, 4, 0)(q, k), rel.attention_score(5, 9, 10, 6)(q, k))
    with torch.no_grad():
        rel.position_bias.normal_()
    shifted = rel.attention_score(5, 9, 5, 0)(q, k)
    assert not torch.allclose(shifted, rel.attention_score(5, 9, 4, 0)(q, k))
