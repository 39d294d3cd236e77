"""`prepare`: raw .jsonl / .txt -> tokenizer + shards + manifest, checked against the tokenizer's own output."""

import json
import random

import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from data_pipeline.documents import iter_documents
from data_pipeline.errors import UserError
from data_pipeline.prepare import prepare
from data_pipeline.shards import MANIFEST, Manifest, open_shard
from data_pipeline.tokenizer import load_tokenizer, special_token_ids, tokenizer_hash, train_wordpiece

WORDS = ("alpha beta gamma delta river mountain quickly slowly because the a of in and reads writes data token "
         "shard manifest loader model training sample corpus sentence paragraph document").split()


def make_docs(n, seed=0):
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))).capitalize() + "."
                 for _ in range(rng.randint(1, 3))]
        docs.append("\n".join(lines))
    return docs


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records),
                    encoding="utf-8")
    return path


def read_dataset(out):
    """(manifest, the documents as lists of ids, per shard), read back through the offsets."""
    manifest = Manifest.load(out)
    dtype = np.dtype(manifest.dtype)
    per_shard = []
    for info in manifest.shards:
        shard = open_shard(out, info, dtype, verify=True)
        assert len(shard.offsets) == info.documents + 1 and shard.offsets[-1] == info.tokens
        bounds = zip(shard.offsets[:-1], shard.offsets[1:], strict=True)
        per_shard.append([shard.tokens[a:b].tolist() for a, b in bounds])
    return manifest, per_shard


def check_dataset(out, expected_texts, summary):
    manifest, per_shard = read_dataset(out)
    tok = load_tokenizer(out)
    expected = [e.ids for e in tok.encode_batch(expected_texts, add_special_tokens=False)]
    assert all(expected), "test corpus docs must all tokenize to something"
    docs = [d for shard in per_shard for d in shard]
    assert docs == expected
    assert manifest.total_documents == len(expected_texts) == summary.documents
    assert manifest.total_tokens == sum(map(len, expected)) == summary.tokens
    assert summary.shards == len(manifest.shards)
    assert manifest.vocab_size == tok.get_vocab_size() == summary.vocab_size
    assert manifest.tokenizer_sha256 == tokenizer_hash((out / "tokenizer.json").read_text())
    assert manifest.special_tokens == special_token_ids(tok)
    assert json.loads((out / "summary.json").read_text()) == summary.__dict__
    return manifest, per_shard


def test_prepare_jsonl(tmp_path):
    texts = make_docs(60)
    records = [{"text": t, "id": i} for i, t in enumerate(texts)]
    # Blank documents and blank lines are skipped, not counted.
    records[5:5] = [{"text": ""}, {"text": "  \n\t"}, ""]
    path = write_jsonl(tmp_path / "in.jsonl", records)
    summary = prepare([path], tmp_path / "out", vocab_size=150)
    manifest, _ = check_dataset(tmp_path / "out", texts, summary)
    assert len(manifest.shards) == 1
    assert manifest.dtype == "<u2"
    assert manifest.vocab_size <= 150
    assert manifest.special_tokens == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}


def test_prepare_txt(tmp_path):
    texts = make_docs(40, seed=1)
    seps = ["\n\n", "\n\n\n", "\n   \n", "\n\t\n\n"]
    body = "\n\n" + "".join(t + seps[i % len(seps)] for i, t in enumerate(texts[:-1])) + texts[-1]  # no final \n
    path = tmp_path / "in.txt"
    path.write_text(body, encoding="utf-8")
    summary = prepare([path], tmp_path / "out", vocab_size=150)
    check_dataset(tmp_path / "out", texts, summary)


def test_documents_are_read_verbatim(tmp_path):
    """The texts handed to the tokenizer: paragraphs keep their inner newlines, CRLF reads as LF."""
    txt = tmp_path / "in.txt"
    txt.write_bytes(b"first line\r\nsecond line  \r\n\r\n \r\nnext doc\n\n\n\tlast\tdoc")
    assert list(iter_documents([txt])) == ["first line\nsecond line  ", "next doc", "\tlast\tdoc"]
    jsonl = write_jsonl(tmp_path / "in.jsonl", [{"text": "  keeps\nall of it "}, {"text": " "}, {"text": "x"}])
    assert list(iter_documents([jsonl, txt]))[:2] == ["  keeps\nall of it ", "x"]


def test_prepare_several_inputs_in_order_with_custom_field(tmp_path):
    a, b = make_docs(10, seed=2), make_docs(10, seed=3)
    ja = write_jsonl(tmp_path / "a.ndjson", [{"body": t} for t in a])
    tb = tmp_path / "b.text"
    tb.write_text("\n\n".join(b) + "\n")
    summary = prepare([ja, tb], tmp_path / "out", vocab_size=150, text_field="body")
    check_dataset(tmp_path / "out", a + b, summary)


def test_docs_that_tokenize_to_nothing_are_dropped(tmp_path):
    texts = make_docs(10, seed=4)
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts[:3]] + [{"text": "\u200b \u200d"}]
                       + [{"text": t} for t in texts[3:]])
    summary = prepare([path], tmp_path / "out", vocab_size=150)
    check_dataset(tmp_path / "out", texts, summary)
    assert summary.skipped == {"no_tokens": 1} and summary.records_read == 11


def test_several_shards_never_split_a_document(tmp_path):
    texts = make_docs(80, seed=5)
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts])
    shard_tokens = 40
    summary = prepare([path], tmp_path / "out", vocab_size=150, shard_tokens=shard_tokens)
    manifest, per_shard = check_dataset(tmp_path / "out", texts, summary)
    assert len(manifest.shards) >= 5
    assert [s.path for s in manifest.shards] == [f"shard_{i:05d}.bin" for i in range(len(manifest.shards))]
    for info, docs in zip(manifest.shards[:-1], per_shard[:-1], strict=True):
        # A shard closes with the document that reaches the limit, not earlier or later.
        assert info.tokens >= shard_tokens
        assert info.tokens - len(docs[-1]) < shard_tokens
    assert 0 < manifest.shards[-1].tokens


def test_existing_tokenizer_is_used(tmp_path):
    texts = make_docs(50, seed=6)
    tok = train_wordpiece(make_docs(200, seed=7), vocab_size=120)
    tok.save(str(tmp_path / "tok.json"))
    (tmp_path / "tokdir").mkdir()
    tok.save(str(tmp_path / "tokdir" / "tokenizer.json"))
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts])
    for i, given in enumerate([tmp_path / "tok.json", tmp_path / "tokdir"]):
        out = tmp_path / f"out{i}"
        summary = prepare([path], out, vocab_size=9999, tokenizer=given)  # vocab_size is ignored
        manifest, _ = check_dataset(out, texts, summary)
        assert manifest.tokenizer_sha256 == tokenizer_hash((tmp_path / "tok.json").read_text())
        assert (out / "tokenizer.json").read_bytes() == (tmp_path / "tok.json").read_bytes()  # kept as given
        assert manifest.vocab_size == tok.get_vocab_size() == 120


def test_datasets_sharing_a_unigram_tokenizer_share_its_hash(tmp_path):
    """The trainer refuses held-out data whose manifest names another tokenizer. A Unigram tokenizer read and
    serialized again changes its scores' last digits, so the hash is of the file as written, and a given
    tokenizer is kept as it is: data and held-out data then name the same one."""
    data = prepare([write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in make_docs(300, seed=8)])],
                   tmp_path / "data", vocab_size=400, tokenizer_kind="unigram")
    heldout = prepare([write_jsonl(tmp_path / "b.jsonl", [{"text": t} for t in make_docs(30, seed=9)])],
                      tmp_path / "heldout", tokenizer=tmp_path / "data" / "tokenizer.json")
    assert data.vocab_size == heldout.vocab_size
    assert Manifest.load(tmp_path / "heldout").tokenizer_sha256 == Manifest.load(tmp_path / "data").tokenizer_sha256


def test_large_vocabulary_uses_uint32(tmp_path):
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials)}
    vocab.update({f"w{i}": i for i in range(len(specials), 70_000)})
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(tmp_path / "big.json"))
    texts = ["w5 w69999 W65536", "w65535 w65537", "w12345 nope"]
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts])
    summary = prepare([path], tmp_path / "out", tokenizer=tmp_path / "big.json")
    manifest, per_shard = check_dataset(tmp_path / "out", texts, summary)
    assert manifest.dtype == "<u4"
    assert per_shard == [[[5, 69999, 65536], [65535, 65537], [12345, 1]]]


# ---- errors -----------------------------------------------------------------------------------------------------

def assert_user_error(call, *fragments):
    with pytest.raises(UserError) as exc:
        call()
    for fragment in fragments:
        assert str(fragment) in str(exc.value), (fragment, str(exc.value))
    return exc.value


def test_missing_input(tmp_path):
    missing = tmp_path / "nope.jsonl"
    assert_user_error(lambda: prepare([missing], tmp_path / "out"), missing, "does not exist")
    assert not (tmp_path / "out").exists()


def test_no_inputs(tmp_path):
    assert_user_error(lambda: prepare([], tmp_path / "out"), "no input files")


def test_unknown_suffix(tmp_path):
    path = tmp_path / "data.xml"
    path.write_text("<text>hello</text>\n")
    assert_user_error(lambda: prepare([path], tmp_path / "out"), path, "'.xml'")


def test_bad_shard_tokens(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": "hello world"}])
    assert_user_error(lambda: prepare([path], tmp_path / "out", shard_tokens=0), "--shard-tokens", "0")


def test_malformed_json_line_names_line(tmp_path):
    lines = [json.dumps({"text": t}) for t in make_docs(30, seed=8)]
    lines.insert(11, '{"text": "unterminated')  # line 12
    path = write_jsonl(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out"
    assert_user_error(lambda: prepare([path], out, vocab_size=150), f"{path}:12:", "not valid JSON")
    assert not (out / MANIFEST).exists()
    # Also when the tokenizer is given, so the error comes from the encoding pass.
    tok = train_wordpiece(make_docs(50), vocab_size=120)
    tok.save(str(tmp_path / "tok.json"))
    assert_user_error(lambda: prepare([path], out, tokenizer=tmp_path / "tok.json"), f"{path}:12:")
    assert not (out / MANIFEST).exists()
    # Once the input is fixed, the same --out works: a failed run left no manifest behind.
    del lines[11]
    write_jsonl(path, lines)
    summary = prepare([path], out, vocab_size=150)
    check_dataset(out, make_docs(30, seed=8), summary)


@pytest.mark.parametrize("record", [{"body": "x"}, {"text": 5}, {"text": None}, ["text"], "just a string"])
def test_json_line_without_text_field(tmp_path, record):
    lines = [json.dumps({"text": "fine doc"}), json.dumps({"text": "another"}), json.dumps(record)]
    path = write_jsonl(tmp_path / "in.jsonl", lines)
    assert_user_error(lambda: prepare([path], tmp_path / "out", vocab_size=150), f"{path}:3:", "'text'")


@pytest.mark.parametrize("suffix", [".jsonl", ".txt"])
def test_invalid_utf8_names_line(tmp_path, suffix):
    docs = make_docs(200, seed=9)
    if suffix == ".jsonl":
        lines = [json.dumps({"text": t}).encode() for t in docs]
    else:
        lines = [t.replace("\n", " ").encode() for t in docs]  # no blank lines: one long paragraph
    bad_line = 150
    lines.insert(bad_line - 1, b'{"text": "caf\xe9"}' if suffix == ".jsonl" else b"caf\xe9 au lait")
    assert b"\n".join(lines).split(b"\n").index(lines[bad_line - 1]) == bad_line - 1
    path = tmp_path / f"in{suffix}"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert path.stat().st_size > 8192  # the bad byte sits past the text layer's first read-ahead chunk
    assert_user_error(lambda: prepare([path], tmp_path / "out", vocab_size=150),
                      f"{path}:{bad_line}:", "invalid UTF-8")


@pytest.mark.parametrize("suffix,content", [
    (".jsonl", '{"text": ""}\n\n{"text": "   "}\n{"text": "\\n\\t"}\n'),
    (".txt", "\n\n   \n\t\n"),
    (".txt", ""),
])
def test_empty_corpus(tmp_path, suffix, content):
    path = tmp_path / f"in{suffix}"
    path.write_text(content)
    out = tmp_path / "out"
    assert_user_error(lambda: prepare([path], out), path, "no non-empty document")
    assert not (out / MANIFEST).exists()


def test_out_already_prepared(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in make_docs(20, seed=10)])
    out = tmp_path / "out"
    prepare([path], out, vocab_size=150)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = write_jsonl(tmp_path / "other.jsonl", [{"text": t} for t in make_docs(20, seed=11)])
    assert_user_error(lambda: prepare([other], out, vocab_size=150), out, "already holds a prepared dataset")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
