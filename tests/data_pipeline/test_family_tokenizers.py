"""The byte-level BPE (RoBERTa/BART) and unigram (T5) tokenizer kinds and their special-token roles."""

import itertools
import json

import pytest

from conftest import SAMPLE_CORPUS
from data_pipeline.errors import UserError
from data_pipeline.tokenizer import TOKENIZER_KINDS, special_token_ids, train_tokenizer


@pytest.fixture(scope="module")
def texts():
    with open(SAMPLE_CORPUS) as f:
        return [json.loads(line)["text"] for line in itertools.islice(f, 80)]


def test_kinds_are_registered():
    assert set(TOKENIZER_KINDS) == {"wordpiece", "bytelevel_bpe", "unigram"}
    with pytest.raises(UserError, match="unknown tokenizer kind 'bpe'"):
        train_tokenizer([], "bpe", 100)


def test_bytelevel_follows_roberta_conventions(texts):
    tok = train_tokenizer(texts, "bytelevel_bpe", 800)
    assert [tok.id_to_token(i) for i in range(5)] == ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    assert special_token_ids(tok) == {"bos": 0, "pad": 1, "eos": 2, "unk": 3, "mask": 4, "cls": 0, "sep": 2}
    enc = tok.encode("Hello world, naïve café!")
    assert enc.tokens[0] == "<s>" and enc.tokens[-1] == "</s>"
    assert "Ġworld" in enc.tokens or any(t.startswith("Ġw") for t in enc.tokens)  # spaces kept as Ġ
    assert tok.decode(enc.ids) == "Hello world, naïve café!"  # byte-level: nothing is unknown


def test_unigram_follows_t5_conventions(texts):
    tok = train_tokenizer(texts, "unigram", 600)
    assert [tok.id_to_token(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
    size = tok.get_vocab_size()
    assert tok.token_to_id("<extra_id_0>") == size - 1 and tok.token_to_id("<extra_id_99>") == size - 100
    ids = special_token_ids(tok)
    assert ids == {"pad": 0, "eos": 1, "unk": 2, "sentinel_0": size - 1, "sentinel_99": size - 100}
    enc = tok.encode("A list is a sequence.")
    assert enc.tokens[-1] == "</s>" and enc.tokens[0].startswith("▁")
    with pytest.raises(UserError, match="more than 103"):
        train_tokenizer(texts, "unigram", 100)
