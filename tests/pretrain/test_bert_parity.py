"""Graft's BERT against a real (tiny, random) transformers.BertForMaskedLM, through the explicit key map.

(Both key-map directions for every family: test_family_parity.py.)"""

import pytest
import torch
import transformers

from pretrain.hf import bert as bert_map
from pretrain.hf.convert import from_hf as _from_hf, to_hf as _to_hf
from pretrain.models.bert import BertConfig, BertForMaskedLM

CFG = BertConfig(vocab_size=101, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37,
                 max_position_embeddings=64)


def to_hf(sd):
    return _to_hf(sd, CFG)[0][1]


def from_hf(sd):
    return _from_hf([sd], CFG)[0]


def to_hf_config(cfg):
    return bert_map.parts(cfg)[0].config


from_hf_config = bert_map.from_hf_config

HF_SIZES = dict(vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=37, max_position_embeddings=64)


def _perturb(model: torch.nn.Module) -> None:
    # Fresh inits have zero biases and unit LayerNorms, which would hide swapped bias/norm keys.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)


def _inputs(vocab_size: int):
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1, vocab_size, (3, 16), generator=g)
    attention_mask = torch.ones(3, 16, dtype=torch.long)
    attention_mask[1, 11:] = 0
    attention_mask[2, 4:] = 0
    input_ids[attention_mask == 0] = 0
    token_type_ids = torch.randint(0, 2, (3, 16), generator=g)
    return input_ids, attention_mask, token_type_ids


def _graft_model(seed: int = 0) -> BertForMaskedLM:
    torch.manual_seed(seed)
    return BertForMaskedLM(BertConfig(vocab_size=101, hidden_size=32, num_layers=2, num_heads=4,
                                      intermediate_size=37, max_position_embeddings=64))


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("with_token_types", [True, False])
def test_hf_to_graft_logits_match(attn_implementation, with_token_types):
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(
        transformers.BertConfig(**HF_SIZES, attn_implementation=attn_implementation)).eval()
    _perturb(hf)

    model = BertForMaskedLM(from_hf_config(hf.config.to_dict()))
    model.load_state_dict(from_hf(hf.state_dict()), strict=True)
    model.eval()

    input_ids, attention_mask, token_type_ids = _inputs(101)
    token_type_ids = token_type_ids if with_token_types else None
    with torch.no_grad():
        expected = hf(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits
        actual = model(input_ids, attention_mask, token_type_ids)
    torch.testing.assert_close(actual, expected)




def test_from_hf_without_tied_keys():
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(transformers.BertConfig(**HF_SIZES))
    sd = {k: v for k, v in hf.state_dict().items() if not k.startswith("cls.predictions.decoder.")}
    model = _graft_model()
    model.load_state_dict(from_hf(sd), strict=True)
    torch.testing.assert_close(model.head.decoder.weight, hf.cls.predictions.decoder.weight)


def test_mlm_logits_on_gathered_positions_match_full_logits():
    model = _graft_model().eval()
    input_ids, attention_mask, _ = _inputs(101)
    positions = attention_mask.bool() & (torch.arange(16) % 3 == 0)
    with torch.no_grad():
        full = model(input_ids, attention_mask)
        gathered = model.mlm_logits(model.encode(input_ids, attention_mask)[positions])
    assert gathered.shape == (int(positions.sum()), 101)
    torch.testing.assert_close(gathered, full[positions])


def test_all_ones_mask_equals_no_mask():
    model = _graft_model().eval()
    input_ids, _, _ = _inputs(101)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids, torch.ones_like(input_ids)), model(input_ids))


def test_decoder_weight_is_tied_to_word_embedding():
    model = _graft_model()
    assert model.head.decoder.weight is model.embeddings.word.weight
    sd = model.state_dict()
    assert sd["head.decoder.weight"].data_ptr() == sd["embeddings.word.weight"].data_ptr()
    model.load_state_dict(from_hf(to_hf(_graft_model(seed=1).state_dict())), strict=True)
    assert model.head.decoder.weight is model.embeddings.word.weight


def test_init_is_deterministic():
    a, b = _graft_model().state_dict(), _graft_model().state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match=r"model\.hidden_size \(100\) must be divisible by model\.num_heads \(3\)"):
        BertConfig(hidden_size=100, num_heads=3)
    with pytest.raises(ValueError, match=r"model\.attention_dropout"):
        BertConfig(attention_dropout=1.0)
    with pytest.raises(ValueError, match=r"model\.num_layers"):
        BertConfig(num_layers=0)
    with pytest.raises(ValueError, match=r"position_embedding_type"):
        from_hf_config({**to_hf_config(BertConfig()), "position_embedding_type": "relative_key"})
