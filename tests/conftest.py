"""Shared fixtures: a small prepared dataset cut from the bundled sample corpus, and a CLI runner."""

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CORPUS = REPO_ROOT / "data_pipeline" / "sample_corpus" / "python_docs.jsonl"


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """The first 150 documents of the sample corpus, prepared with a 2,000-token WordPiece vocabulary."""
    from data_pipeline.prepare import prepare

    root = tmp_path_factory.mktemp("small_dataset")
    corpus = root / "corpus.jsonl"
    with open(SAMPLE_CORPUS) as src:
        corpus.write_text("".join(itertools.islice(src, 150)))
    prepare([corpus], root / "data", vocab_size=2000)
    return root / "data"


def run_graft(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real `graft` CLI in a subprocess, as a user would."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "-m", "launch.cli", *map(str, args)], cwd=cwd or REPO_ROOT,
                            capture_output=True, text=True, env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"graft {' '.join(map(str, args))} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result
