"""`graft prepare` as a user runs it: the real CLI in a subprocess."""

import json
import subprocess
import sys
from pathlib import Path

from data_pipeline.tokenizer import TOKENIZER_KINDS
from test_prepare import make_docs

REPO_ROOT = Path(__file__).resolve().parents[2]


def graft(*args):
    return subprocess.run([sys.executable, "-m", "launch.cli", *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)


def test_prepare_cli_bad_line_then_skip_bad(tmp_path):
    lines = [json.dumps({"text": t}) for t in make_docs(40, seed=60)]
    lines[9] = "{broken"
    lines[20] = json.dumps({"text": ""})
    (tmp_path / "a.jsonl").write_text("\n".join(lines[:25]) + "\n")
    (tmp_path / "b.jsonl").write_text("\n".join(lines[25:]) + "\n")
    pattern = str(tmp_path / "*.jsonl")

    failed = graft("prepare", pattern, "--out", tmp_path / "out", "--vocab-size", 150)
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'a.jsonl'}:10: not valid JSON")

    ok = graft("prepare", pattern, "--out", tmp_path / "out", "--vocab-size", 150, "--skip-bad",
               "--shard-tokens", 100)
    assert ok.returncode == 0, ok.stderr
    assert "40 records read, 38 documents kept" in ok.stdout and "1 empty, 1 malformed_json" in ok.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["skipped"] == {"empty": 1, "malformed_json": 1} and summary["shards"] > 1

    again = graft("prepare", pattern, "--out", tmp_path / "out", "--vocab-size", 150, "--skip-bad",
                  "--shard-tokens", 100)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_prepare_help_lists_the_tokenizer_kinds():
    out = graft("prepare", "--help").stdout
    assert "--tokenizer-kind {" + ",".join(sorted(TOKENIZER_KINDS)) + "}" in out
    for option in ("--skip-bad", "--max-doc-mb", "--txt-docs", "--shard-tokens", "--text-field"):
        assert option in out
