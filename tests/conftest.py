"""Shared fixtures: a small prepared dataset cut from the bundled sample corpus, and a CLI runner."""

import atexit
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from data_pipeline.sample_corpus import SAMPLE_CORPUS

REPO_ROOT = Path(__file__).resolve().parent.parent

# Graft's cache (remote shards, local shards' checksum stamps) lives for this test session only, not in the
# user's ~/.cache; set before anything imports data_pipeline, and inherited by every `graft` the tests start.
os.environ["GRAFT_CACHE"] = tempfile.mkdtemp(prefix="graft-test-cache-")
atexit.register(shutil.rmtree, os.environ["GRAFT_CACHE"], ignore_errors=True)


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


@pytest.fixture(scope="session")
def heldout_dataset(small_dataset, tmp_path_factory) -> Path:
    """Documents 151-200 of the sample corpus (none of small_dataset's), with small_dataset's tokenizer."""
    from data_pipeline.prepare import prepare

    root = tmp_path_factory.mktemp("heldout_dataset")
    corpus = root / "corpus.jsonl"
    with open(SAMPLE_CORPUS) as src:
        corpus.write_text("".join(itertools.islice(src, 150, 200)))
    prepare([corpus], root / "data", tokenizer=small_dataset / "tokenizer.json")
    return root / "data"


def run_graft(*args: str, cwd: Path | None = None, check: bool = True,
              timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real `graft` CLI in a subprocess, as a user would."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "-m", "launch.cli", *map(str, args)], cwd=cwd or REPO_ROOT,
                            capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"graft {' '.join(map(str, args))} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def start_graft(*args: str, log: Path) -> subprocess.Popen:
    """Start the real `graft` CLI in its own process group (so a test can signal or kill all of it)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = open(log, "w")
    return subprocess.Popen([sys.executable, "-m", "launch.cli", *map(str, args)], cwd=REPO_ROOT, stdout=out,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)


def logged_losses(run_dir: Path) -> list[float]:
    """The loss of every step in `run_dir/metrics.jsonl`, in step order (steps re-run after a resume: last value)."""
    from pretrain.metrics import read_metrics

    return [record["loss"] for _, record in sorted(read_metrics(run_dir).items())]


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (torchrun starts each worker in a session of its own, so a process group
    does not reach them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], []))
    return tree


def signal_tree(pids: list[int], sig) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
