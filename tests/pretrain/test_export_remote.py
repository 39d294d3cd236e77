"""Export of a run that trained on a remote dataset (data.path a URL): training kept the dataset's tokenizer and
manifest in the run directory, so the export works with the URL gone; older run directories read them there."""

import functools
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from conftest import REPO_ROOT, run_graft

pytestmark = pytest.mark.slow


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path):
    """(directory served, its base URL): a real HTTP server on loopback only."""
    root = tmp_path / "served"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_export_of_a_run_on_a_remote_dataset(small_dataset, served, tmp_path):
    root, url = served
    shutil.copytree(small_dataset, root / "data")
    run_dir = tmp_path / "run"
    run_graft("train", REPO_ROOT / "configs" / "tiny.yaml", f"data.path={url}/data", f"train.run_dir={run_dir}",
              f"data.cache_dir={tmp_path / 'cache'}", "train.max_steps=1", "data.num_workers=0")
    # Training kept the dataset's manifest and tokenizer: the export needs the URL no more.
    assert (run_dir / "dataset" / "tokenizer.json").read_bytes() == (small_dataset / "tokenizer.json").read_bytes()
    shutil.rmtree(root / "data")
    out = tmp_path / "hf"
    result = run_graft("export", run_dir, out)
    assert "max abs difference" in result.stdout
    expected = Tokenizer.from_file(str(small_dataset / "tokenizer.json"))
    assert Tokenizer.from_file(str(out / "tokenizer.json")).get_vocab() == expected.get_vocab()
    text = "Return the length of the object."
    assert AutoTokenizer.from_pretrained(out)(text)["input_ids"] == expected.encode(text).ids
    assert "150 documents" in (out / "README.md").read_text()  # the model card's data statistics

    # A run directory made before training kept the copy reads the tokenizer from the URL, checked against
    # the manifest there: one that is not the tokenizer the manifest names (changed after training) is refused.
    shutil.rmtree(run_dir / "dataset")
    shutil.copytree(small_dataset, root / "data")
    (root / "data" / "tokenizer.json").write_text(expected.to_str().replace("[UNK]", "[UNKNOWN]"))
    failed = run_graft("export", run_dir, tmp_path / "hf2", check=False)
    assert failed.returncode == 2, failed.stderr
    assert f"{url}/data/tokenizer.json is not the tokenizer" in failed.stderr, failed.stderr
