"""Train or load a `tokenizers` tokenizer, and record which ids are special.

Three kinds, each with its family's conventions:
- wordpiece (BERT, ALBERT, ELECTRA): lowercasing WordPiece, [PAD] [UNK] [CLS] [SEP] [MASK] at ids 0-4;
- bytelevel_bpe (RoBERTa, BART): GPT-2 style byte-level BPE, <s> <pad> </s> <unk> <mask> at ids 0-4;
- unigram (T5): SentencePiece-style Unigram with <pad> </s> <unk> at ids 0-2 and the 100 sentinels at the
  end of the vocabulary in T5's order (<extra_id_0> is the last id).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from data_pipeline.errors import UserError

# BERT's conventions; the order fixes their ids (pad=0, which the models assume for padding_idx).
BERT_SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


def train_tokenizer(texts: Iterable[str], kind: str = "wordpiece", vocab_size: int = 8192) -> Tokenizer:
    """Train a tokenizer of `kind` (one of TOKENIZER_KINDS) on `texts`."""
    if kind not in TOKENIZER_KINDS:
        raise UserError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(TOKENIZER_KINDS)}")
    return TOKENIZER_KINDS[kind](texts, vocab_size)


def train_wordpiece(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """A lowercasing BERT WordPiece tokenizer trained on `texts`."""
    tok = Tokenizer(models.WordPiece(unk_token=BERT_SPECIAL_TOKENS["unk"], max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, clean_text=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(BERT_SPECIAL_TOKENS.values()),
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    cls, sep = BERT_SPECIAL_TOKENS["cls"], BERT_SPECIAL_TOKENS["sep"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
    )
    return tok


# RoBERTa's and BART's order (fairseq's dictionary): <s>=0 <pad>=1 </s>=2 <unk>=3, <mask> next.
BYTELEVEL_SPECIAL_TOKENS = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>", "mask": "<mask>"}
T5_SPECIAL_TOKENS = {"pad": "<pad>", "eos": "</s>", "unk": "<unk>"}
T5_SENTINELS = 100


def sentinel(i: int) -> str:
    return f"<extra_id_{i}>"


def train_bytelevel_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """RoBERTa/BART byte-level BPE: no unknown bytes, spaces kept as "Ġ", <s> A </s> on encode."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  special_tokens=list(BYTELEVEL_SPECIAL_TOKENS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    bos, eos = BYTELEVEL_SPECIAL_TOKENS["bos"], BYTELEVEL_SPECIAL_TOKENS["eos"]
    tok.post_processor = processors.RobertaProcessing((eos, tok.token_to_id(eos)), (bos, tok.token_to_id(bos)),
                                                      trim_offsets=True, add_prefix_space=False)
    return tok


def train_unigram(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """T5's SentencePiece conventions: "▁" marks word starts, A </s> on encode, sentinels last."""
    if vocab_size <= T5_SENTINELS + len(T5_SPECIAL_TOKENS):
        raise UserError(f"a unigram vocabulary needs more than {T5_SENTINELS + len(T5_SPECIAL_TOKENS)} entries "
                        f"(it ends with {T5_SENTINELS} sentinels), got {vocab_size}")
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size - T5_SENTINELS, show_progress=False,
                                      special_tokens=list(T5_SPECIAL_TOKENS.values()),
                                      unk_token=T5_SPECIAL_TOKENS["unk"])
    tok.train_from_iterator(texts, trainer=trainer)
    # Added in reverse so <extra_id_0> gets the highest id, as in T5's vocabulary.
    tok.add_special_tokens([sentinel(i) for i in reversed(range(T5_SENTINELS))])
    eos = T5_SPECIAL_TOKENS["eos"]
    tok.post_processor = processors.TemplateProcessing(single=f"$A {eos}", pair=f"$A {eos} $B:1 {eos}:1",
                                                       special_tokens=[(eos, tok.token_to_id(eos))])
    return tok


TOKENIZER_KINDS = {"wordpiece": train_wordpiece, "bytelevel_bpe": train_bytelevel_bpe, "unigram": train_unigram}


def read_tokenizer(path: str | Path) -> tuple[str, Tokenizer]:
    """The text of a `tokenizer.json` file (or of the one inside a Hugging Face tokenizer directory) and the
    tokenizer it holds."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"tokenizer file {path} does not exist; pass a tokenizer.json or a directory holding one")
    text = path.read_text(encoding="utf-8", errors="replace")  # junk: the clear error below
    return text, parse_tokenizer(text, str(path))


def load_tokenizer(path: str | Path) -> Tokenizer:
    return read_tokenizer(path)[1]


def parse_tokenizer(text: str, where: str, fix: str = "") -> Tokenizer:
    """The tokenizer in `text` (a tokenizer.json read from `where`); a clear error, ending in `fix`, if malformed."""
    try:
        return Tokenizer.from_str(text)
    except Exception as exc:  # tokenizers raises a bare Exception on malformed files
        raise UserError(f"{where} is not a valid tokenizers JSON file ({exc}){fix}") from exc


def special_token_ids(tok: Tokenizer) -> dict[str, int]:
    """Role -> id of the special tokens, by the conventions the tokenizer follows (see the module docstring).

    wordpiece: pad unk cls sep mask; bytelevel_bpe: bos pad eos unk mask, and cls/sep as aliases of bos/eos
    (so MLM builds <s> A </s> rows); unigram: pad eos unk sentinel_0 sentinel_99.
    """
    if tok.token_to_id(BERT_SPECIAL_TOKENS["cls"]) is not None:
        return _ids(tok, BERT_SPECIAL_TOKENS, "WordPiece")
    if tok.token_to_id(BYTELEVEL_SPECIAL_TOKENS["bos"]) is not None:
        ids = _ids(tok, BYTELEVEL_SPECIAL_TOKENS, "byte-level BPE")
        return {**ids, "cls": ids["bos"], "sep": ids["eos"]}
    if tok.token_to_id(sentinel(0)) is not None:
        ids = _ids(tok, {**T5_SPECIAL_TOKENS, "sentinel_0": sentinel(0),
                         "sentinel_99": sentinel(T5_SENTINELS - 1)}, "T5 unigram")
        if ids["sentinel_0"] - ids["sentinel_99"] != T5_SENTINELS - 1:
            raise UserError("the tokenizer's sentinels <extra_id_0>..<extra_id_99> are not consecutive descending "
                            "ids as in T5; train one with `graft prepare --tokenizer-kind unigram`")
        return ids
    raise UserError(f"the tokenizer has none of [CLS] (WordPiece), <s> (byte-level BPE) or <extra_id_0> (T5); "
                    f"train one with `graft prepare` (kinds: {', '.join(TOKENIZER_KINDS)})")


def _ids(tok: Tokenizer, tokens: dict[str, str], kind: str) -> dict[str, int]:
    ids = {}
    for role, token in tokens.items():
        token_id = tok.token_to_id(token)
        if token_id is None:
            raise UserError(f"the {kind} tokenizer has no {token} token ({role}); train one with `graft prepare` "
                            "or add it")
        ids[role] = token_id
    return ids


def tokenizer_hash(text: str) -> str:
    """A dataset's tokenizer identity: the sha256 of its tokenizer.json as written. Not of the tokenizer read
    and serialized again: a Unigram tokenizer's first round trip changes its scores' last digits."""
    return hashlib.sha256(text.encode()).hexdigest()
