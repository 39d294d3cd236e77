"""A remote dataset through a flaky network, end to end: the real `graft train` (real DeepSpeed, 1 and 2 ranks),
`graft export` and `graft prepare --tokenizer URL` against a fault-injecting HTTP server on 127.0.0.1
(tests/fault_http.py). One dataset of 6 shards is served for the whole module under several names, each name with
its own faults, so one server and one prepared dataset serve every test.

Permanent faults. A fault ends the run on one of these paths, and the matrix takes each once:

    fault                  read by                              data.num_workers  ranks
    manifest 404           the launcher, before torchrun starts        1            2
    host does not resolve  the launcher, before torchrun starts        1            1
    tokenizer 404          each rank, before DeepSpeed starts          1            2
    shard 404              a DataLoader worker (its prefetch)          1            2
    shard 403              the trainer itself (no workers)             0            2
    shard corrupt twice    a DataLoader worker                         1            1
    shard 401              the trainer itself                          0            1

The manifest is read by the launcher (its special-token check) whatever the ranks and workers, so its faults
and the host's fail there; the tokenizer is first read by the ranks. The four shard faults cover the product
{DataLoader worker, trainer} x {1, 2 ranks}: a worker's error crosses to its rank as a message, a rank's error
crosses to the launcher as a record; each crossing is met with and without the other. Every kind of fault
appears once: the message differs by kind, the way it travels by path, and a kind's message is the same on
every path (tests/data_pipeline/test_remote.py checks each kind's message on its own). Seven runs instead of
the 5 kinds x 4 paths' 20.
"""

import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from fault_http import FaultServer, Rule
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from conftest import logged_losses, run_graft
from data_pipeline.prepare import prepare
from data_pipeline.shards import Manifest
from pretrain.run_dir import CONFIG_FILE
from test_failures import TINY, train

pytestmark = pytest.mark.slow

NO_HOST = "http://graft-no-such-host.invalid"
# Short waits, a short stall timeout: faults cost the runs little time.
FAST = ["data.remote.read_timeout_s=1", "data.remote.backoff_s=0.05", "data.remote.backoff_max_s=0.2"]
STEPS = 3  # the faults are all met by the first step's batches and their prefetch


def rules() -> list[Rule]:
    """The faults of each name the dataset is served under (first matching rule wins)."""
    return [
        # Transient: every file's first request answers 503; shard 1's second is reset mid-body, shard 2's
        # stalls beyond data.remote.read_timeout_s, shard 3's arrives with one byte changed.
        Rule("/flaky/*", "503", first=1),
        Rule("/flaky/shard_00001.bin", "reset", first=2),
        Rule("/flaky/shard_00002.bin", "stall", first=2),
        Rule("/flaky/shard_00003.bin", "corrupt", first=2),
        Rule("/no_manifest/manifest.json", "404"),
        Rule("/no_tokenizer/tokenizer.json", "404"),
        Rule("/no_shard/*.bin", "404"),
        Rule("/forbidden/*.bin", "403"),
        Rule("/corrupt/shard_00002.bin", "corrupt"),
        Rule("/unauthorized/*.bin", "401"),
        Rule("/private/*", "403"),
        Rule("/tokenizer_flaky/*", "503", first=1),  # graft prepare's tokenizer
        Rule("/tokenizer_flaky/*", "reset", first=2),
    ]


@pytest.fixture(scope="module")
def dataset(small_dataset, tmp_path_factory) -> Path:
    """small_dataset's documents and tokenizer in 6 shards, in a directory served under every name of `rules`."""
    root = tmp_path_factory.mktemp("served")
    prepare([small_dataset.parent / "corpus.jsonl"], root / "ds", tokenizer=small_dataset / "tokenizer.json",
            shard_tokens=20_000)
    assert len(Manifest.load(root / "ds").shards) == 6
    for name in ("flaky", "no_manifest", "no_tokenizer", "no_shard", "forbidden", "corrupt", "unauthorized",
                 "tokenizer_flaky"):
        (root / name).symlink_to("ds")
    return root / "ds"


@pytest.fixture(scope="module")
def server(dataset):
    with FaultServer(dataset.parent, rules(), stall_s=30) as server:
        yield server


@pytest.fixture(scope="module")
def flaky_run(dataset, server, tmp_path_factory) -> tuple[Path, str]:
    """(run directory, its log) of a run of STEPS steps through every transient fault, on 1 rank with a DataLoader
    worker (the shards are fetched there, and by its prefetch threads)."""
    work = tmp_path_factory.mktemp("flaky")
    run_dir = work / "run"
    result = run_graft("train", TINY, f"data.path={server.url}/flaky", f"train.run_dir={run_dir}",
                       f"data.cache_dir={work / 'cache'}", f"train.max_steps={STEPS}", *FAST)
    return run_dir, result.stderr


def test_training_through_transient_faults_matches_a_clean_run(dataset, server, flaky_run, tmp_path):
    """Every file failed once, three shards twice: the run gave bitwise the losses of one on the local copy,
    and logged each retry once, with its URL and reason."""
    run_dir, log = flaky_run
    clean = tmp_path / "clean"
    run_graft("train", TINY, f"data.path={dataset}", f"train.run_dir={clean}", f"train.max_steps={STEPS}")
    losses = logged_losses(run_dir)
    assert len(losses) == STEPS and losses == logged_losses(clean)

    shards = [s.path for s in Manifest.load(dataset).shards]
    assert {p.rsplit("/", 1)[1] for p in server.gets("/flaky/*.bin")} == set(shards)  # every fault was met
    warnings = [line for line in log.splitlines() if line.startswith("warning: ")]
    url = f"{server.url}/flaky"
    for name in ("manifest.json", "tokenizer.json", *shards):
        assert f"warning: {url}/{name}: HTTP 503 Service Unavailable; try 2 of 10 in " in log, name
    for shard, reason in [("shard_00001.bin", "the body was cut short"), ("shard_00002.bin", "stalled: no data "
                          "within data.remote.read_timeout_s"), ("shard_00003.bin", "its sha256 differs from the "
                          "manifest's; fetching it once more")]:
        assert sum(line.startswith(f"warning: {url}/{shard}: {reason}") for line in warnings) == 1, (shard, log)
    assert len(warnings) == 2 + len(shards) + 3, warnings  # once per fault, no more
    assert "Traceback" not in log


SHARD = r"shard_0000\d\.bin"
PERMANENT = {  # name: (data.path under the server, ranks, workers, the error's pattern; {url}: the data.path)
    "manifest_404": ("no_manifest", 2, 1, r"{url}/manifest\.json: not found \(HTTP 404 or no such object\); is "
                                          r"{url} a dataset written by `graft prepare`\? check data\.path"),
    "host_does_not_resolve": (None, 1, 1, r"{url}/manifest\.json: the host name 'graft-no-such-host\.invalid' does "
                                          r"not resolve; check the host name in the URL, and that this machine's DNS "
                                          r"can resolve it"),
    "tokenizer_404": ("no_tokenizer", 2, 1, r"{url}/tokenizer\.json: not found \(HTTP 404 or no such object\); is "
                                            r"{url} a dataset written by `graft prepare`\? check data\.path"),
    "shard_404_worker": ("no_shard", 2, 1, r"{url}/" + SHARD + r": not found \(HTTP 404 or no such object\); the "
                                           r"manifest at {url} lists it: re-upload the whole dataset written by "
                                           r"`graft prepare`"),
    "shard_403_trainer": ("forbidden", 2, 0, r"{url}/" + SHARD + r": HTTP 403 Forbidden: access denied; check the "
                                             r"credentials and the permissions of the bucket or directory"),
    "shard_corrupt_worker": ("corrupt", 1, 1, r"shard shard_00002\.bin: the copy at {url}/shard_00002\.bin is "
                                              r"corrupt \(its sha256 differs from the manifest's, on two downloads\); "
                                              r"re-upload the dataset written by `graft prepare`"),
    "shard_401_trainer": ("unauthorized", 1, 0, r"{url}/" + SHARD + r": HTTP 401 Unauthorized: the server wants "
                                                r"credentials; use a URL the server lets you read without them"),
}


@pytest.mark.parametrize("case", sorted(PERMANENT))
def test_permanent_fault_ends_the_run_with_one_clear_error(server, tmp_path, case):
    """Exit code 2, the last line the fault's `error:` line (on 2 ranks: each rank's own line above it, the same
    message), no traceback from any process, no process left (train() checks), no retry."""
    name, ranks, workers, pattern = PERMANENT[case]
    url = f"{server.url}/{name}" if name else f"{NO_HOST}/ds"
    message = pattern.format(url=re.escape(url))
    code, last, _ = train(url, tmp_path / "run", ranks, f"data.num_workers={workers}",
                          f"data.cache_dir={tmp_path / 'cache'}", *FAST)
    log = (tmp_path / "run.log").read_text()
    assert code == 2, log[-3000:]
    assert re.fullmatch(f"error: {message}.*", last), log[-3000:]
    errors = [line for line in log.splitlines() if line.startswith("error: ")]
    assert all(re.fullmatch(f"error: (rank \\d: )?{message}.*", line) for line in errors), errors
    assert "Traceback" not in log, log[-3000:]
    warnings = [line for line in log.splitlines() if line.startswith("warning: ")]  # a corrupt copy: fetched again
    assert all("fetching it once more" in line for line in warnings) and bool(warnings) == ("corrupt" in case), log
    if name:  # no retries: each file met its fault once per rank (a corrupt shard: once per download)
        faulted = Counter(path for path, _ in server.faults() if path.startswith(f"/{name}/"))
        assert faulted and max(faulted.values()) <= ranks * (2 if "corrupt" in case else 1), faulted


def test_export_of_a_run_on_a_remote_dataset(dataset, server, flaky_run, tmp_path):
    """Training kept the dataset's manifest and tokenizer in the run directory, so the export works with the URL
    gone. A run directory made before training kept them reads them at data.path: a permanent fault there is
    one clear error, and a tokenizer changed after training is refused."""
    run_dir, _ = flaky_run
    assert (run_dir / "dataset" / "tokenizer.json").read_bytes() == (dataset / "tokenizer.json").read_bytes()
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    point_at(run, f"{NO_HOST}/ds")  # the dataset is offline
    out = tmp_path / "hf"
    result = run_graft("export", run, out)
    assert "max abs difference" in result.stdout
    expected = Tokenizer.from_file(str(dataset / "tokenizer.json"))
    assert Tokenizer.from_file(str(out / "tokenizer.json")).get_vocab() == expected.get_vocab()
    text = "Return the length of the object."
    assert AutoTokenizer.from_pretrained(out)(text)["input_ids"] == expected.encode(text).ids
    assert "150 documents" in (out / "README.md").read_text()  # the model card's data statistics

    shutil.rmtree(run / "dataset")  # as a run directory from before training kept the copy
    point_at(run, f"{server.url}/no_tokenizer")  # the other permanent faults reach export by the same fetch
    failed = run_graft("export", run, tmp_path / "hf2", check=False)
    assert failed.returncode == 2, failed.stderr[-3000:]
    assert failed.stderr.strip().splitlines()[-1] == (
        f"error: {server.url}/no_tokenizer/tokenizer.json: not found (HTTP 404 or no such object); is "
        f"{server.url}/no_tokenizer a dataset written by `graft prepare`? check data.path"), failed.stderr[-3000:]
    assert "Traceback" not in failed.stderr and not (tmp_path / "hf2").exists()

    changed = tmp_path / "served_changed"
    shutil.copytree(dataset, changed)
    (changed / "tokenizer.json").write_text(expected.to_str().replace("[UNK]", "[UNKNOWN]"))
    with FaultServer(tmp_path) as other:
        point_at(run, f"{other.url}/served_changed")
        failed = run_graft("export", run, tmp_path / "hf3", check=False)
    assert failed.returncode == 2, failed.stderr
    assert f"{other.url}/served_changed/tokenizer.json is not the tokenizer" in failed.stderr, failed.stderr


def point_at(run_dir: Path, url: str) -> None:
    """Set data.path in the run's config.yaml to `url`."""
    config = OmegaConf.load(run_dir / CONFIG_FILE)
    config.data.path = url
    OmegaConf.save(config, run_dir / CONFIG_FILE)


def test_prepare_with_a_remote_tokenizer(small_dataset, dataset, server, tmp_path):
    """`graft prepare --tokenizer URL`: fetched through a 503 and a reset (retried), the dataset is the one
    prepared with the local tokenizer; a permanent fault is one error line naming the URL and the fix, exit 2,
    nothing written."""
    corpus = small_dataset.parent / "corpus.jsonl"
    url = f"{server.url}/tokenizer_flaky/tokenizer.json"
    result = run_graft("prepare", corpus, "--out", tmp_path / "ok", "--tokenizer", url)
    assert f"warning: {url}: HTTP 503 Service Unavailable; try 2 of 10" in result.stderr, result.stderr
    assert f"warning: {url}: the body was cut short" in result.stderr, result.stderr
    assert Manifest.load(tmp_path / "ok").tokenizer_sha256 == Manifest.load(small_dataset).tokenizer_sha256
    assert (tmp_path / "ok" / "tokenizer.json").read_bytes() == (small_dataset / "tokenizer.json").read_bytes()
    for tokenizer, message in [
            (f"{server.url}/no_tokenizer", f"{server.url}/no_tokenizer/tokenizer.json: not found (HTTP 404 or no "
                                           "such object); pass the URL of a tokenizer.json, or of a directory "
                                           "holding one"),
            (f"{server.url}/private/tokenizer.json", f"{server.url}/private/tokenizer.json: HTTP 403 Forbidden: access "
                                                     "denied; check the credentials"),
            (f"{NO_HOST}/tokenizer.json", f"{NO_HOST}/tokenizer.json: the host name 'graft-no-such-host.invalid' "
                                          "does not resolve; check the host name in the URL")]:
        out = tmp_path / "failed"
        failed = run_graft("prepare", corpus, "--out", out, "--tokenizer", tokenizer, check=False)
        assert failed.returncode == 2, failed.stderr[-3000:]
        assert failed.stderr.strip().splitlines()[-1].startswith(f"error: {message}"), failed.stderr[-3000:]
        assert "Traceback" not in failed.stderr and not (out / "manifest.json").exists()
