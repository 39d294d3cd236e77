"""Small random models of every family, on both sides: transformers' classes and Graft's configs."""

import torch
import transformers as T

from pretrain.models.config import ModelConfig

VOCAB = 99
SIZES = dict(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37,
             max_position_embeddings=40)
BERT_LIKE = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                 max_position_embeddings=40)


def hf_models() -> dict:
    """family -> (list of random transformers models, one per part, main part first)."""
    electra = dict(BERT_LIKE, embedding_size=16)
    return {
        "bert": [T.BertForMaskedLM(T.BertConfig(**BERT_LIKE))],
        "bert_pretraining": [T.BertForPreTraining(T.BertConfig(**BERT_LIKE))],
        "roberta": [T.RobertaForMaskedLM(T.RobertaConfig(**BERT_LIKE, type_vocab_size=1))],
        "albert": [T.AlbertForMaskedLM(T.AlbertConfig(**BERT_LIKE, embedding_size=16))],
        "albert_pretraining": [T.AlbertForPreTraining(T.AlbertConfig(**BERT_LIKE, embedding_size=16))],
        "electra": [T.ElectraForPreTraining(T.ElectraConfig(**electra)),
                    T.ElectraForMaskedLM(T.ElectraConfig(**dict(electra, hidden_size=16, num_attention_heads=2,
                                                                 intermediate_size=20, num_hidden_layers=1)))],
        "t5": [T.T5ForConditionalGeneration(T.T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=37, num_layers=2,
                                                       num_decoder_layers=3, num_heads=4,
                                                       feed_forward_proj="gated-gelu",
                                                       tie_word_embeddings=False, decoder_start_token_id=0))],
        "bart": [T.BartForConditionalGeneration(T.BartConfig(vocab_size=VOCAB, d_model=32, encoder_layers=2,
                                                             decoder_layers=3, encoder_attention_heads=4,
                                                             decoder_attention_heads=4, encoder_ffn_dim=37,
                                                             decoder_ffn_dim=37, max_position_embeddings=40))],
    }


def graft_configs() -> dict[str, ModelConfig]:
    return {
        "bert": ModelConfig(family="bert", **SIZES),
        "bert_pretraining": ModelConfig(family="bert", head="pretraining", **SIZES),
        "roberta": ModelConfig(family="roberta", **dict(SIZES, pad_token_id=1, type_vocab_size=1),
                               bos_token_id=0, eos_token_id=2),
        "albert": ModelConfig(family="albert", **SIZES, embedding_size=16, share_layers=True, hidden_act="gelu_new"),
        "albert_pretraining": ModelConfig(family="albert", head="pretraining", **SIZES, embedding_size=16,
                                          share_layers=True, hidden_act="gelu_new"),
        "electra": ModelConfig(family="electra", **SIZES, embedding_size=16, generator_hidden_size=16,
                               generator_num_heads=2, generator_intermediate_size=20, generator_num_layers=1),
        "t5": ModelConfig(family="t5", **dict(SIZES, layer_norm_eps=1e-6), hidden_act="gelu_new",
                          num_decoder_layers=3, decoder_start_token_id=0, eos_token_id=1),
        "bart": ModelConfig(family="bart", **dict(SIZES, layer_norm_eps=1e-5, pad_token_id=1), num_decoder_layers=3,
                            bos_token_id=0, eos_token_id=2, decoder_start_token_id=2),
    }


def perturb(model: torch.nn.Module) -> None:
    """Fresh inits have zero biases and unit norms, which would hide swapped bias/norm keys."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for name, b in model.named_buffers():
            if name.endswith("final_logits_bias"):
                b.add_(torch.randn_like(b) * 0.1)


def inputs(pad_token_id: int, encoder_decoder: bool):
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, VOCAB, (3, 16), generator=g)
    attention_mask = torch.ones(3, 16, dtype=torch.long)
    attention_mask[1, 11:] = 0
    attention_mask[2, 4:] = 0
    input_ids[attention_mask == 0] = pad_token_id
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if encoder_decoder:
        batch["decoder_input_ids"] = torch.randint(3, VOCAB, (3, 9), generator=g)
    return batch


def graft_outputs(model, batch: dict, part_index: int) -> dict:
    """Graft's logits named as transformers names them, for the part `part_index` of the family."""
    cfg = model.config
    with torch.no_grad():
        if cfg.is_encoder_decoder:
            return {"logits": model(**batch)}
        if cfg.family == "electra":
            return {"logits": model(**batch, task=("discriminator", "generator")[part_index])}
        if cfg.head == "pretraining":
            mlm, pair = model(**batch, pair_logits=True)
            pair_name = "seq_relationship_logits" if cfg.family == "bert" else "sop_logits"
            return {"prediction_logits": mlm, pair_name: pair}
        return {"logits": model(**batch)}


def compare(model, hf_model, batch: dict, part_index: int = 0, dtype=torch.float32) -> None:
    """Graft's outputs equal transformers' (assert_close, default tolerances of `dtype`)."""
    model, hf_model = model.to(dtype), hf_model.to(dtype)
    ours = graft_outputs(model, batch, part_index)
    with torch.no_grad():
        theirs = hf_model(**batch)
    keep = batch["attention_mask"].bool()
    for name, value in ours.items():
        expected = theirs[name]
        if value.dim() >= 2 and value.shape[:2] == keep.shape:  # per-token outputs: padded positions mean nothing
            value, expected = value[keep], expected[keep]
        torch.testing.assert_close(value, expected)
