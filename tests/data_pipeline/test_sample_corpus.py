"""Checks of the bundled sample corpus (data_pipeline/sample_corpus/python_docs.jsonl)."""

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from debian_packages import apt_install

CORPUS_DIR = Path(__file__).resolve().parents[2] / "data_pipeline" / "sample_corpus"
CORPUS = CORPUS_DIR / "python_docs.jsonl"
BUILD = CORPUS_DIR / "build.py"
DEBIAN_SOURCES = Path("/usr/share/doc/python3.11-doc/html/_sources")
# The python3.11-doc version the bundled file was built from (see README.md);
# other versions have different text, so a rebuild could not match.
BUILT_FROM_VERSION = "3.11.2-6+deb12u9"

# Leftover reST markup that the conversion must have removed.
MARKUP_PATTERNS = {
    "role": re.compile(r":[a-z]+(?::[a-z]+)?:`"),
    "inline literal": re.compile(r"``"),
    "directive": re.compile(r"(?:^|\n)\.\. [\w:-]+::"),
    "code-block": re.compile(r"\.\. code-block"),
    "comment or target": re.compile(r"(?:^|\n)\.\. "),
    "doctest prompt": re.compile(r"(?:^|\n)>>> "),
    "section underline": re.compile(r"(?:^|\n)([=\-~^*#])\1{3,}(?:\n|$)"),
    "grid table": re.compile(r"(?:^|\n)\+[-=]+\+"),
}


@pytest.fixture(scope="module")
def records():
    with CORPUS.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_corpus_parses_and_is_well_formed(records):
    assert CORPUS.stat().st_size <= 5_000_000
    assert len(records) >= 1000
    for record in records:
        assert set(record) == {"text", "source", "section"}
        assert all(isinstance(v, str) and v.strip() for v in record.values()), record
        assert record["source"].endswith(".rst")
    sections = Counter(r["section"] for r in records)
    for section in ("library", "tutorial", "reference", "howto", "faq"):
        assert sections[section] > 0, f"no documents from {section}/"


def test_no_leftover_markup(records):
    for record in records:
        for name, pattern in MARKUP_PATTERNS.items():
            match = pattern.search(record["text"])
            assert match is None, (
                f"{name} markup left in {record['source']}: "
                f"{record['text'][max(0, match.start() - 60):match.end() + 60]!r}")


def installed_doc_version():
    """The installed python3.11-doc version, or None if dpkg cannot say."""
    if shutil.which("dpkg-query") is None:
        return None
    result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "python3.11-doc"],
                            capture_output=True, text=True)
    return (result.stdout.strip() or None) if result.returncode == 0 else None


def test_build_reproduces_bundled_file(tmp_path):
    """build.py turns the python3.11-doc reST sources into exactly the bundled file (installed here as root)."""
    if installed_doc_version() != BUILT_FROM_VERSION or not DEBIAN_SOURCES.is_dir():
        apt_install(f"python3.11-doc={BUILT_FROM_VERSION}")
    assert DEBIAN_SOURCES.is_dir(), f"python3.11-doc is installed but {DEBIAN_SOURCES} is missing"
    out = tmp_path / "python_docs.jsonl"
    subprocess.run([sys.executable, str(BUILD), "--out", str(out)], check=True,
                   capture_output=True)
    assert out.read_bytes() == CORPUS.read_bytes()
