"""prepare is resumable: a killed run, re-run, ends byte-identical to an uninterrupted one; a finished
run, re-run, changes nothing."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from data_pipeline.prepare import STATE_FILE, prepare
from data_pipeline.shards import Manifest
from data_pipeline.tokenizer import tokenizer_hash, train_wordpiece
from test_prepare import make_docs

REPO_ROOT = Path(__file__).resolve().parents[2]


def snapshot(out: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.iterdir())}


def kill_after_three_shards(args: list[str], out: Path) -> dict:
    """Start `graft prepare ARGS --out OUT`, kill -9 it once its state lists 3 shards; its state then."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    child = subprocess.Popen([sys.executable, "-m", "launch.cli", "prepare", *args, "--out", str(out)],
                             cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / STATE_FILE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        try:
            if len(json.loads(state.read_text())["shards"]) >= 3:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.002)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "prepare finished before it could be interrupted"
    return json.loads(state.read_text())


def test_killed_prepare_resumes_to_the_same_dataset(tmp_path):
    texts = make_docs(15_000, seed=50)
    corpus = tmp_path / "in.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    train_wordpiece(texts[:500], vocab_size=150).save(str(tmp_path / "tok.json"))
    args = [str(corpus), "--tokenizer", str(tmp_path / "tok.json"), "--shard-tokens", "3000"]

    reference = tmp_path / "reference"
    expected = prepare([corpus], reference, tokenizer=tmp_path / "tok.json", shard_tokens=3000, progress=False)

    out = tmp_path / "out"
    interrupted = kill_after_three_shards(args, out)
    state = out / STATE_FILE
    assert 3 <= len(interrupted["shards"]) < expected.shards
    assert not (out / "manifest.json").exists()

    summary = prepare([corpus], out, tokenizer=tmp_path / "tok.json", shard_tokens=3000, progress=False)
    assert summary.resumed and not expected.resumed
    assert {**summary.__dict__, "resumed": False} == expected.__dict__
    assert not state.exists()
    got, want = snapshot(out), snapshot(reference)
    assert got.keys() == want.keys()
    for name in want:
        if name != "summary.json":
            assert got[name][0] == want[name][0], name


def test_finished_prepare_reruns_as_a_no_op(tmp_path, capsys):
    texts = make_docs(200, seed=51)
    corpus = tmp_path / "in.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    first = prepare([corpus], tmp_path / "out", vocab_size=150, shard_tokens=500, progress=False)
    before = snapshot(tmp_path / "out")
    # Training the tokenizer again could break ties differently: the re-run must not train at all.
    again = prepare([corpus], tmp_path / "out", vocab_size=150, shard_tokens=500, progress=False)
    assert again == first
    assert "nothing to do" in capsys.readouterr().out
    assert snapshot(tmp_path / "out") == before


def test_killed_prepare_that_trained_a_unigram_tokenizer_resumes(tmp_path):
    """The resume checks the tokenizer it wrote by the file's hash: a Unigram tokenizer read and serialized
    again differs in its scores' last digits, and the check once refused every such resume."""
    texts = make_docs(15_000, seed=52)
    corpus = tmp_path / "in.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "out"
    args = [str(corpus), "--tokenizer-kind", "unigram", "--vocab-size", "300", "--shard-tokens", "3000"]
    kill_after_three_shards(args, out)
    written = (out / "tokenizer.json").read_bytes()
    summary = prepare([corpus], out, tokenizer_kind="unigram", vocab_size=300, shard_tokens=3000, progress=False)
    assert summary.resumed and summary.documents == len(texts)
    assert (out / "tokenizer.json").read_bytes() == written
    manifest = Manifest.load(out)
    assert manifest.tokenizer_sha256 == tokenizer_hash(written.decode())
    assert sum(shard.tokens for shard in manifest.shards) == summary.tokens
