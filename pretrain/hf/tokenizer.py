"""The dataset's tokenizer as a `transformers` fast tokenizer with its special tokens named, so
`AutoTokenizer.from_pretrained(export)` encodes exactly as training did."""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken, Tokenizer

from data_pipeline.tokenizer import (BERT_SPECIAL_TOKENS, BYTELEVEL_SPECIAL_TOKENS, T5_SENTINELS, T5_SPECIAL_TOKENS,
                                     sentinel)
from pretrain.models.config import ModelConfig


def save_tokenizer(tok: Tokenizer, cfg: ModelConfig, out: Path):
    from transformers import BertTokenizerFast, PreTrainedTokenizerFast

    max_length = cfg.max_position_embeddings - (2 if cfg.family == "roberta" else 0)
    if tok.token_to_id(BERT_SPECIAL_TOKENS["cls"]) is not None:
        s = BERT_SPECIAL_TOKENS
        hf = BertTokenizerFast(tokenizer_object=tok, do_lower_case=True, unk_token=s["unk"], sep_token=s["sep"],
                               pad_token=s["pad"], cls_token=s["cls"], mask_token=s["mask"],
                               model_max_length=max_length)
    elif tok.token_to_id(BYTELEVEL_SPECIAL_TOKENS["bos"]) is not None:
        s = BYTELEVEL_SPECIAL_TOKENS
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=s["bos"], eos_token=s["eos"], unk_token=s["unk"],
                                     pad_token=s["pad"], cls_token=s["bos"], sep_token=s["eos"],
                                     # RoBERTa's mask token swallows the space before it
                                     mask_token=AddedToken(s["mask"], lstrip=True, special=True),
                                     model_max_length=max_length)
    else:
        s = T5_SPECIAL_TOKENS
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=s["eos"], unk_token=s["unk"], pad_token=s["pad"],
                                     additional_special_tokens=[sentinel(i) for i in range(T5_SENTINELS)],
                                     model_max_length=512)
    hf.save_pretrained(str(out))
    return hf
