"""Train or load a `tokenizers` tokenizer, and record which ids are special."""

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


TOKENIZER_KINDS = {"wordpiece": train_wordpiece}


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a `tokenizer.json` file, or the one inside a Hugging Face tokenizer directory."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"tokenizer file {path} does not exist; pass a tokenizer.json or a directory holding one")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed files
        raise UserError(f"{path} is not a valid tokenizers JSON file ({exc})") from exc


def special_token_ids(tok: Tokenizer) -> dict[str, int]:
    """Ids of BERT's special tokens; a tokenizer that lacks one cannot feed MLM."""
    ids = {}
    for role, token in BERT_SPECIAL_TOKENS.items():
        token_id = tok.token_to_id(token)
        if token_id is None:
            raise UserError(f"the tokenizer has no {token} token ({role}); train one with `graft prepare` or add it")
        ids[role] = token_id
    return ids


def tokenizer_hash(tok: Tokenizer) -> str:
    return hashlib.sha256(tok.to_str().encode()).hexdigest()
