"""Train or load a `tokenizers` tokenizer, and record which ids are special.

Three kinds, each with its family's conventions:
- wordpiece (BERT, ALBERT, ELECTRA): lowercasing WordPiece, [PAD] [UNK] [CLS] [SEP] [MASK] at ids 0-4;
- bytelevel_bpe (RoBERTa, BART): GPT-2 style byte-level BPE, <s> <pad> </s> <unk> <mask> at ids 0-4;
- unigram (T5): SentencePiece-style Unigram with <pad> </s> <unk> at ids 0-2 and the 100 sentinels at the
  end of the vocabulary in T5's order (<extra_id_0> is the last id).

Training is reproducible: the same texts give the same tokenizer.json in every process. `tokenizers`' own
trainers do not promise that (they iterate Rust hash maps seeded per process); see train_wordpiece and
train_unigram for what each kind needs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from data_pipeline.dataset_files import dataset_file, is_url
from data_pipeline.errors import UserError
from data_pipeline.fetch import RemoteConfig, fetch_bytes

# BERT's conventions; the order fixes their ids (pad=0, which the models assume for padding_idx).
BERT_SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


def train_tokenizer(texts: Iterable[str], kind: str = "wordpiece", vocab_size: int = 8192) -> Tokenizer:
    """Train a tokenizer of `kind` (one of TOKENIZER_KINDS) on `texts`: a list, or an object whose `__iter__`
    starts a new pass (WordPiece reads them twice), not a one-shot iterator."""
    if kind not in TOKENIZER_KINDS:
        raise UserError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(TOKENIZER_KINDS)}")
    if iter(texts) is texts:
        raise TypeError("train_tokenizer needs texts it can read more than once, not a one-shot iterator")
    return TOKENIZER_KINDS[kind](texts, vocab_size)


def _bert_wordpiece(vocab: dict[str, int] | None = None) -> Tokenizer:
    tok = Tokenizer(models.WordPiece(vocab, unk_token=BERT_SPECIAL_TOKENS["unk"], max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, clean_text=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def train_wordpiece(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """A lowercasing BERT WordPiece tokenizer trained on `texts` (read twice).

    `tokenizers`' trainer numbers each continuing piece ("##e") when it first meets it in its hash map of
    words, whose order changes with every process, and breaks ties between equally frequent merges by those
    numbers: two processes gave different vocabularies (ids and, at the cutoff, tokens). So a first pass
    without merges collects the continuing pieces, and the real pass gets them first, in sorted order, as if
    they were special tokens: every number, and so every tie, is then the same in every process. The
    tokenizer is rebuilt from the trained vocabulary so that only the real special tokens are special.
    """
    def trained(size: int, reserved: list[str]) -> Tokenizer:
        tok = _bert_wordpiece()
        tok.train_from_iterator(texts, trainer=trainers.WordPieceTrainer(
            vocab_size=size, min_frequency=min_frequency, special_tokens=[*BERT_SPECIAL_TOKENS.values(), *reserved],
            continuing_subword_prefix="##", show_progress=False))
        return tok

    alphabet = trained(0, []).get_vocab(with_added_tokens=False)
    continuing = sorted(t for t in alphabet if t.startswith("##") and len(t) == 3)
    tok = _bert_wordpiece(trained(vocab_size, continuing).get_vocab(with_added_tokens=False))
    tok.add_special_tokens(list(BERT_SPECIAL_TOKENS.values()))
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
COVERAGE_PENALTY = 0.0001  # tokenizers' Unigram trainer: score step between characters it adds back


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
    tok.model = _canonical_unigram(tok)
    # Added in reverse so <extra_id_0> gets the highest id, as in T5's vocabulary.
    tok.add_special_tokens([sentinel(i) for i in reversed(range(T5_SENTINELS))])
    eos = T5_SPECIAL_TOKENS["eos"]
    tok.post_processor = processors.TemplateProcessing(single=f"$A {eos}", pair=f"$A {eos} $B:1 {eos}:1",
                                                       special_tokens=[(eos, tok.token_to_id(eos))])
    return tok


def _canonical_unigram(tok: Tokenizer) -> models.Unigram:
    """The trained Unigram model made the same in every process. The trainer differs in two ways:
    - it sums in parallel, so scores differ in the last digits (4e-14 apart), and pieces of near-equal score
      come out in another order, that is with other ids: scores are rounded to 1e-6 and pieces ordered by
      (score, piece) after the special tokens;
    - every character must stay a piece, and those that training dropped come back with the lowest score
      plus 0.0001 per character already added, in a hash set's order: the single characters whose scores
      lie on that ladder (with those that trained to the lowest score) get those scores back in the order of
      the characters.
    """
    model = json.loads(tok.to_str())["model"]
    special = len(T5_SPECIAL_TOKENS)
    vocab = model["vocab"]
    assert [piece for piece, _ in vocab[:special]] == list(T5_SPECIAL_TOKENS.values()), vocab[:special]
    pieces = dict(vocab[special:])
    floor = min(pieces.values())
    heights = {p: (pieces[p] - floor) / COVERAGE_PENALTY for p in pieces if len(p) == 1}
    rungs = {p: round(h) for p, h in heights.items() if abs(h - round(h)) < 1e-6}
    top = 0  # the ladder is rungs 0, 1, 2, ... without a gap (a rare character's own score can sit higher on it)
    while top in rungs.values():
        top += 1
    added = sorted(p for p, rung in rungs.items() if rung < top)
    for piece, score in zip(added, sorted((pieces[p] for p in added), reverse=True), strict=True):
        pieces[piece] = score
    rest = sorted(((p, round(score, 6)) for p, score in pieces.items()), key=lambda entry: (-entry[1], entry[0]))
    return models.Unigram([tuple(v) for v in vocab[:special]] + rest, unk_id=model["unk_id"],
                          byte_fallback=model.get("byte_fallback", False))


# prepare_options.TOKENIZER_KIND_NAMES names them for the command line, which does not import this module.
TOKENIZER_KINDS = {"wordpiece": train_wordpiece, "bytelevel_bpe": train_bytelevel_bpe, "unigram": train_unigram}


def read_tokenizer(path: str | Path, remote: RemoteConfig | None = None) -> tuple[str, Tokenizer]:
    """The text of a `tokenizer.json` file (or of the one inside a Hugging Face tokenizer directory), local or
    at a URL (fetched with `remote`'s retries), and the tokenizer it holds."""
    if is_url(str(path)):
        url = str(path) if str(path).endswith(".json") else dataset_file(path, "tokenizer.json")
        text = fetch_bytes(url, remote or RemoteConfig(), "pass the URL of a tokenizer.json, or of a directory "
                           "holding one").decode(errors="replace")
        return text, parse_tokenizer(text, url)
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"tokenizer file {path} does not exist; pass a tokenizer.json or a directory holding one")
    text = path.read_text(encoding="utf-8", errors="replace")  # junk: the clear error below
    return text, parse_tokenizer(text, str(path))


def load_tokenizer(path: str | Path, remote: RemoteConfig | None = None) -> Tokenizer:
    return read_tokenizer(path, remote)[1]


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
