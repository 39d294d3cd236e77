"""prepare's other input formats and its handling of bad input: an error naming file and line, or skipped
and counted by reason with --skip-bad."""

import json

import pytest

from data_pipeline.errors import UserError
from data_pipeline.prepare import prepare
from data_pipeline.shards import MANIFEST
from test_prepare import check_dataset, make_docs, write_jsonl


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    from data_pipeline.tokenizer import train_wordpiece

    path = tmp_path_factory.mktemp("tok") / "tok.json"
    train_wordpiece(make_docs(300, seed=40), vocab_size=150).save(str(path))
    return path


def test_parquet_csv_and_saved_dataset(tmp_path, tokenizer_file):
    import datasets

    a, b, c = make_docs(20, seed=41), make_docs(15, seed=42), make_docs(25, seed=43)
    datasets.Dataset.from_dict({"id": list(range(20)), "body": a}).to_parquet(str(tmp_path / "a.parquet"))
    datasets.Dataset.from_dict({"body": b, "n": [1] * 15}).to_csv(str(tmp_path / "b.csv"), index=False)
    datasets.Dataset.from_dict({"body": c}).save_to_disk(str(tmp_path / "saved"))
    summary = prepare([tmp_path / "a.parquet", tmp_path / "b.csv", tmp_path / "saved"], tmp_path / "out",
                      tokenizer=tokenizer_file, text_field="body", progress=False)
    check_dataset(tmp_path / "out", a + b + c, summary)
    with pytest.raises(UserError, match="no column 'text'") as exc:
        prepare([tmp_path / "a.parquet"], tmp_path / "out2", tokenizer=tokenizer_file, progress=False)
    assert str(tmp_path / "a.parquet") in str(exc.value)


def test_glob_and_one_document_per_line(tmp_path, tokenizer_file):
    docs = [d.replace("\n", " ") for d in make_docs(30, seed=44)]
    for i in range(3):  # written out of order: the glob reads them sorted
        (tmp_path / f"part{2 - i}.txt").write_text("\n".join(docs[(2 - i) * 10:(3 - i) * 10]) + "\n")
    summary = prepare([str(tmp_path / "part*.txt")], tmp_path / "out", tokenizer=tokenizer_file, txt_mode="line",
                      progress=False)
    check_dataset(tmp_path / "out", docs, summary)
    with pytest.raises(UserError, match="matches no file"):
        prepare([str(tmp_path / "nothing*.jsonl")], tmp_path / "out3", tokenizer=tokenizer_file)


BAD_RECORDS = {  # reason -> (a bad jsonl line, bytes)
    "invalid_utf8": b'{"text": "caf\xe9 au lait"}',
    "malformed_json": b'{"text": "unterminated',
    "missing_text_field": b'{"body": "no text here"}',
    "binary": b'{"text": "abc\\u0000\\u0001def"}',
}


@pytest.mark.parametrize("reason", sorted(BAD_RECORDS))
def test_bad_jsonl_line_errors_or_is_skipped(tmp_path, tokenizer_file, reason):
    docs = make_docs(12, seed=45)
    lines = [json.dumps({"text": t}).encode() for t in docs]
    lines.insert(7, BAD_RECORDS[reason])  # line 8
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(UserError) as exc:
        prepare([path], tmp_path / "out", tokenizer=tokenizer_file, progress=False)
    assert f"{path}:8:" in str(exc.value) and "--skip-bad" in str(exc.value)
    assert not (tmp_path / "out" / MANIFEST).exists()
    summary = prepare([path], tmp_path / "out", tokenizer=tokenizer_file, skip_bad=True, progress=False)
    check_dataset(tmp_path / "out", docs, summary)
    assert summary.skipped == {reason: 1} and summary.records_read == 13


def test_empty_documents_are_skipped_and_counted(tmp_path, tokenizer_file):
    docs = make_docs(6, seed=46)
    records = [{"text": docs[0]}, {"text": ""}, {"text": " \n\t "}, *[{"text": t} for t in docs[1:]]]
    summary = prepare([write_jsonl(tmp_path / "in.jsonl", records)], tmp_path / "out", tokenizer=tokenizer_file,
                      progress=False)
    check_dataset(tmp_path / "out", docs, summary)
    assert summary.skipped == {"empty": 2}
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["skipped"] == {"empty": 2}


def test_binary_junk_in_a_text_file(tmp_path, tokenizer_file):
    docs = make_docs(10, seed=47)
    junk = bytes(range(256)) * 64  # NUL, control bytes, invalid UTF-8, and newlines but no blank line
    body = "\n\n".join(docs[:4]).encode() + b"\n\n" + junk + b"\n\n" + "\n\n".join(docs[4:]).encode() + b"\n"
    path = tmp_path / "in.txt"
    path.write_bytes(body)
    junk_line = body[:body.index(junk)].count(b"\n") + 1
    with pytest.raises(UserError) as exc:
        prepare([path], tmp_path / "out", tokenizer=tokenizer_file, progress=False)
    assert f"{path}:{junk_line}:" in str(exc.value)
    summary = prepare([path], tmp_path / "out", tokenizer=tokenizer_file, skip_bad=True, progress=False)
    check_dataset(tmp_path / "out", docs, summary)
    assert sum(summary.skipped.values()) == 1 and set(summary.skipped) <= {"binary", "invalid_utf8"}


@pytest.mark.parametrize("suffix", [".jsonl", ".txt"])
def test_a_100_mb_document(tmp_path, tokenizer_file, suffix):
    """Rejected (or skipped) by size while reading, without holding 100 MB in memory."""
    docs = make_docs(8, seed=48)
    huge = "word " * (20 << 20)  # 100 MiB
    path = tmp_path / f"in{suffix}"
    with open(path, "w") as f:
        for i, doc in enumerate(docs):
            if i == 5:
                f.write(json.dumps({"text": huge}) + "\n" if suffix == ".jsonl" else huge + "\n\n")
            f.write(json.dumps({"text": doc}) + "\n" if suffix == ".jsonl" else doc + "\n\n")
    line = 6 if suffix == ".jsonl" else 1 + sum(d.count("\n") + 2 for d in docs[:5])
    with pytest.raises(UserError, match="larger than the limit") as exc:
        prepare([path], tmp_path / "out", tokenizer=tokenizer_file, progress=False)
    assert f"{path}:{line}:" in str(exc.value)
    summary = prepare([path], tmp_path / "out", tokenizer=tokenizer_file, skip_bad=True, progress=False)
    check_dataset(tmp_path / "out", docs, summary)
    assert summary.skipped == {"too_long": 1}
