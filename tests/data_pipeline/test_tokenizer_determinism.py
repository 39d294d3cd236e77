"""Tokenizer training gives the same tokenizer.json in every process. `tokenizers`' trainers alone did not:
they iterate hash maps seeded per process (WordPiece numbered its "##x" pieces in that order, Unigram put its
coverage characters and near-equal scores in it), so each kind is trained in two fresh processes here."""

import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, SAMPLE_CORPUS
from data_pipeline.tokenizer import train_tokenizer

TRAIN = """
import hashlib, itertools, json, sys
from data_pipeline.tokenizer import train_tokenizer
with open(sys.argv[1]) as f:
    texts = [json.loads(line)["text"] for line in itertools.islice(f, 400)]
print(hashlib.sha256(train_tokenizer(texts, sys.argv[2], 3000).to_str().encode()).hexdigest())
"""


def trained_hash(kind: str) -> str:
    result = subprocess.run([sys.executable, "-c", TRAIN, str(SAMPLE_CORPUS), kind], capture_output=True, text=True,
                            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


@pytest.mark.parametrize("kind", ["wordpiece", "unigram", "bytelevel_bpe"])
def test_two_processes_train_the_same_tokenizer(kind):
    assert trained_hash(kind) == trained_hash(kind)


def test_a_one_shot_iterator_is_refused():
    """WordPiece reads its texts twice; a generator would silently give the second pass nothing."""
    with pytest.raises(TypeError, match="more than once"):
        train_tokenizer(iter(["a text"]), "wordpiece", 100)
