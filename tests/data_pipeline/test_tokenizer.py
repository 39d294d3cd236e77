"""Training, saving and loading the WordPiece tokenizer, and the special-token contract."""

import random

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from data_pipeline.errors import UserError
from data_pipeline.tokenizer import (BERT_SPECIAL_TOKENS, load_tokenizer, special_token_ids, tokenizer_hash,
                                     train_wordpiece)

WORDS = ("the quick brown fox jumps over lazy dog while running towards river bank under bright morning sun "
         "and several happy children were playing with colourful kites near old wooden bridge because weather "
         "was pleasant enough for everyone to enjoy outdoor activities during summer holidays").split()


def english_like(n_docs, seed=0):
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        sentences = []
        for _ in range(rng.randint(1, 4)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(4, 14))]
            sentences.append(" ".join([words[0].capitalize()] + words[1:]) + rng.choice(".!?"))
        docs.append(" ".join(sentences))
    return docs


@pytest.fixture(scope="module")
def corpus():
    return english_like(400)


@pytest.fixture(scope="module")
def tok(corpus):
    return train_wordpiece(corpus, vocab_size=300)


def test_special_tokens_have_ids_0_to_4(tok):
    assert special_token_ids(tok) == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]):
        assert tok.id_to_token(i) == token
    assert list(BERT_SPECIAL_TOKENS.values()) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_encode_wraps_in_cls_sep_and_lowercases(tok):
    enc = tok.encode("The Quick BROWN fox.")
    assert enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]"
    assert enc.ids[0] == 2 and enc.ids[-1] == 3
    assert enc.tokens[1:-1] == ["the", "quick", "brown", "fox", "."]
    assert tok.encode("The Quick BROWN fox.").ids == tok.encode("the quick brown fox.").ids
    plain = tok.encode("The Quick BROWN fox.", add_special_tokens=False)
    assert plain.ids == enc.ids[1:-1]
    # Pairs follow BERT: [CLS] a [SEP] b [SEP], the second segment typed 1.
    pair = tok.encode("the fox", "the dog")
    assert pair.tokens == ["[CLS]", "the", "fox", "[SEP]", "the", "dog", "[SEP]"]
    assert pair.type_ids == [0, 0, 0, 0, 1, 1, 1]


def test_unseen_word_is_split_into_pieces_not_unknown(tok):
    enc = tok.encode("runningly", add_special_tokens=False)
    assert len(enc.tokens) > 1
    assert all(t.startswith("##") for t in enc.tokens[1:])
    assert 1 not in enc.ids  # every letter was seen in training
    assert tok.decode(enc.ids) == "runningly"


def test_vocab_size_respects_request(corpus):
    small = train_wordpiece(corpus, vocab_size=120)
    assert small.get_vocab_size() == 120  # the corpus has more than enough distinct pieces
    big = train_wordpiece(corpus, vocab_size=5000)
    # Capped by what the corpus holds, never above the request.
    assert 120 < big.get_vocab_size() <= 5000
    assert big.get_vocab_size() < 5000
    # Every corpus word made it into the bigger vocabulary whole.
    vocab = big.get_vocab()
    assert all(w in vocab for w in WORDS)


def test_save_and_load_file_and_directory(tmp_path, tok, corpus):
    tok.save(str(tmp_path / "tokenizer.json"))
    from_file = load_tokenizer(tmp_path / "tokenizer.json")
    from_dir = load_tokenizer(tmp_path)
    from_str = load_tokenizer(str(tmp_path))
    sample = corpus[:50] + ["Unseen Zebra words, WITH capitals!"]
    expected = [e.ids for e in tok.encode_batch(sample)]
    for loaded in (from_file, from_dir, from_str):
        assert [e.ids for e in loaded.encode_batch(sample)] == expected
        assert special_token_ids(loaded) == special_token_ids(tok)


def test_hash_tells_tokenizers_apart(corpus, tok):
    other = train_wordpiece(corpus, vocab_size=200)
    assert tokenizer_hash(other.to_str()) != tokenizer_hash(tok.to_str())
    assert len(tokenizer_hash(tok.to_str())) == 64


def test_load_missing_path(tmp_path):
    with pytest.raises(UserError, match="does not exist") as exc:
        load_tokenizer(tmp_path / "nope.json")
    assert str(tmp_path / "nope.json") in str(exc.value)
    # A directory without tokenizer.json names the file it looked for.
    with pytest.raises(UserError, match="does not exist") as exc:
        load_tokenizer(tmp_path)
    assert str(tmp_path / "tokenizer.json") in str(exc.value)


@pytest.mark.parametrize("content", ["{not json", '{"version": "1.0"}', ""])
def test_load_malformed_file(tmp_path, content):
    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    with pytest.raises(UserError, match="not a valid tokenizers JSON file") as exc:
        load_tokenizer(path)
    assert str(path) in str(exc.value)


def test_special_token_ids_names_missing_token(corpus):
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordPieceTrainer(vocab_size=100, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"],
                                        show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    assert tok.token_to_id("[SEP]") == 3
    with pytest.raises(UserError, match=r"\[MASK\]") as exc:
        special_token_ids(tok)
    assert "mask" in str(exc.value)
