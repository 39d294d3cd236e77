"""Remote datasets over real HTTP: a fault-injecting server on 127.0.0.1 started by the test (tests/fault_http.py),
a bounded verified cache, retries of transient faults, at-once errors for permanent ones, prefetch."""

import socket
import threading
import time

import numpy as np
import pytest
import torch
from fault_http import FaultServer, Rule

from data_pipeline.errors import UserError
from data_pipeline.fetch import RemoteConfig, fetch_bytes
from data_pipeline.loader import DataConfig, Loader
from data_pipeline.packing import PackedSegments
from data_pipeline.shards import Manifest
from test_loader import collate, loader_dataset, take

# Short waits and timeouts, so that faults cost the tests little time.
FAST = RemoteConfig(attempts=4, backoff_s=0.02, backoff_max_s=0.1, connect_timeout_s=2.0, read_timeout_s=1.0)


def make_remote_loader(path, cache, cache_bytes=1 << 30, workers=0, rank=0, world=1, remote=FAST, window=0):
    cfg = DataConfig(path=str(path), seq_len=8, num_workers=workers, prefetch_factor=2, cache_dir=str(cache),
                     cache_bytes=cache_bytes, remote=remote, shuffle_window_shards=window)
    return Loader(cfg, 6, collate, seed=7, rank=rank, world=world, micro_batch=3)


def same_batches(got, expected):
    return [b["index"].tolist() for b in got] == [b["index"].tolist() for b in expected] and \
        all(torch.equal(a["tokens"], b["tokens"]) for a, b in zip(got, expected, strict=True))


def warnings_in(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


@pytest.mark.parametrize("workers", [0, 2])
def test_remote_reads_equal_local_reads(tmp_path, workers):
    local = loader_dataset(tmp_path / "served" / "ds", 40, 6, 3)  # 14 shards of ~3 documents
    cache = tmp_path / "cache"
    shard_bytes = max(p.stat().st_size for p in local.glob("*.bin"))
    budget = 3 * shard_bytes  # far less than the dataset: shards are evicted and fetched again
    with FaultServer(tmp_path / "served") as server:
        for rank in range(2):
            expected = take(make_remote_loader(local, cache, rank=rank, world=2), 20)
            remote = make_remote_loader(f"{server.url}/ds", cache, budget, workers=workers, rank=rank, world=2)
            assert same_batches(take(remote, 20), expected)
            sizes = _sizes(cache)
            assert sizes and sum(sizes) <= budget


def _sizes(directory):
    """Sizes of the files under `directory` now: a prefetch that was under way when its loader stopped may
    still finish and evict a file between listing and stat (the budget holds at every moment)."""
    sizes = []
    for p in directory.rglob("*"):
        try:
            if p.is_file():
                sizes.append(p.stat().st_size)
        except FileNotFoundError:
            pass
    return sizes


@pytest.mark.parametrize("fault", ["503", "429", "500", "reset", "cut", "stall", "corrupt"])
def test_transient_faults_are_retried(tmp_path, capfd, fault):
    """Every file fails once (the manifest with a 503, each shard with `fault`), then is served: the loader
    gives the batches of the local copy, each file was fetched twice, and each retry was logged once with its
    URL and its reason."""
    local = loader_dataset(tmp_path / "served" / "ds", 30, 6, 2)
    rules = [Rule("*.bin", fault, first=1), Rule("*/manifest.json", "503", first=1)]
    expected = take(make_remote_loader(local, tmp_path / "stamps"), 10)
    with FaultServer(tmp_path / "served", rules) as server:
        got = take(make_remote_loader(f"{server.url}/ds", tmp_path / "cache"), 10)
        fetched = server.gets()
    assert same_batches(got, expected)
    assert all(fetched.count(path) == 2 for path in fetched), fetched
    lines = warnings_in(capfd.readouterr().err)
    assert sorted(line.split()[1].rstrip(":") for line in lines) == sorted(f"{server.url}{p}" for p in set(fetched))
    reason = {"503": "HTTP 503", "429": "HTTP 429", "500": "HTTP 500", "reset": "cut short", "cut": "cut short",
              "stall": "stalled", "corrupt": "sha256 differs"}[fault]
    assert all(reason in line for line in lines if ".bin" in line), lines


def test_connection_refused_until_the_server_starts(tmp_path, capfd):
    (tmp_path / "file.txt").write_text("hello")
    with socket.socket() as s:  # a port nothing listens on, for now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    servers = []
    starter = threading.Timer(1.0, lambda: servers.append(FaultServer(tmp_path, port=port).__enter__()))
    starter.start()
    try:
        remote = RemoteConfig(attempts=8, backoff_s=0.3, backoff_max_s=0.5)
        assert fetch_bytes(f"http://127.0.0.1:{port}/file.txt", remote, "") == b"hello"
    finally:
        starter.join()
        for server in servers:
            server.__exit__(None, None, None)
    lines = warnings_in(capfd.readouterr().err)
    assert lines and all(f"http://127.0.0.1:{port}/file.txt: cannot connect" in line for line in lines), lines


@pytest.mark.parametrize("fault, cause", [("404", "not found (HTTP 404 or no such object)"),
                                          ("403", "HTTP 403 Forbidden: access denied"),
                                          ("401", "HTTP 401 Unauthorized: the server wants credentials")])
def test_permanent_faults_fail_at_once(tmp_path, capfd, fault, cause):
    local = loader_dataset(tmp_path / "served" / "ds", 12, 6, 0)
    first = sorted(local.glob("*.bin"))[0].name
    with FaultServer(tmp_path / "served", [Rule("*.bin", fault)]) as server:
        segments = PackedSegments(f"{server.url}/ds", 6, cache_dir=tmp_path / "cache", remote=FAST)
        with pytest.raises(UserError) as exc:
            segments.read(0)
        assert server.gets("*.bin") == [f"/ds/{first}"]  # one try, no retry
    assert str(exc.value).startswith(f"{server.url}/ds/{first}: {cause}; ")
    assert not warnings_in(capfd.readouterr().err)


def test_unresolvable_host_fails_at_once(tmp_path):
    started = time.monotonic()
    with pytest.raises(UserError, match="'graft-no-such-host.invalid' does not resolve; check the host"):
        PackedSegments("http://graft-no-such-host.invalid/ds", 6, cache_dir=tmp_path / "cache", remote=FAST)
    assert time.monotonic() - started < 30  # no retries: a resolver's own wait at most


def test_a_lasting_transient_fault_ends_in_an_error(tmp_path, capfd):
    local = loader_dataset(tmp_path / "served" / "ds", 12, 6, 0)
    first = sorted(local.glob("*.bin"))[0].name
    with FaultServer(tmp_path / "served", [Rule("*.bin", "503")]) as server:
        segments = PackedSegments(f"{server.url}/ds", 6, cache_dir=tmp_path / "cache", remote=FAST)
        with pytest.raises(UserError) as exc:
            segments.read(0)
        assert server.gets("*.bin") == [f"/ds/{first}"] * FAST.attempts
    assert str(exc.value).startswith(f"{server.url}/ds/{first}: HTTP 503 Service Unavailable, still after 4 tries")
    assert "data.remote.attempts" in str(exc.value)
    assert len(warnings_in(capfd.readouterr().err)) == FAST.attempts - 1


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_copy_at_the_url_is_named(tmp_path, damage):
    """A shard whose bytes at the URL differ from the manifest's is fetched twice, then named as corrupt."""
    local = loader_dataset(tmp_path / "served" / "ds", 12, 6, 0)
    bad = sorted(local.glob("*.bin"))[2]
    data = bytearray(bad.read_bytes())
    if damage == "flip":
        data[1] ^= 0x55
    else:
        del data[-8:]
    bad.write_bytes(bytes(data))
    with FaultServer(tmp_path / "served") as server:
        segments = PackedSegments(f"{server.url}/ds", 6, cache_dir=tmp_path / "cache", remote=FAST)
        with pytest.raises(UserError) as exc:
            for i in range(len(segments)):
                segments.read(i)
        assert server.gets(f"*/{bad.name}") == [f"/ds/{bad.name}"] * 2
    assert str(exc.value).startswith(f"shard {bad.name}: the copy at {server.url}/ds/{bad.name} is corrupt (")
    assert ("sha256" if damage == "flip" else f"{len(data)} bytes, the manifest says") in str(exc.value)
    # Nothing unverified is left in the cache under a usable name.
    assert not [p for p in (tmp_path / "cache").rglob(f"*{bad.name}")]


def test_missing_remote_dataset(tmp_path):
    with FaultServer(tmp_path) as server:
        with pytest.raises(UserError) as exc:
            PackedSegments(f"{server.url}/nothing", 6, cache_dir=tmp_path / "cache", remote=FAST)
    assert str(exc.value).startswith(f"{server.url}/nothing/manifest.json: not found")
    assert f"is {server.url}/nothing a dataset written by `graft prepare`?" in str(exc.value)


def test_error_in_a_dataloader_worker_is_the_message_alone(tmp_path):
    """torch re-raises a worker's exception with the worker's traceback pasted into the message; a UserError
    comes through as its own message."""
    loader_dataset(tmp_path / "served" / "ds", 12, 6, 0)
    with FaultServer(tmp_path / "served", [Rule("*.bin", "404")]) as server:
        loader = make_remote_loader(f"{server.url}/ds", tmp_path / "cache", workers=2)
        with pytest.raises(UserError) as exc:
            take(loader, 1)
    assert str(exc.value).startswith(f"{server.url}/ds/shard_") and "not found" in str(exc.value)
    assert "Traceback" not in str(exc.value) and "\n" not in str(exc.value)


def test_prefetch_fetches_the_next_shards_of_the_order(tmp_path):
    """While the first batch is read, the shards that come next in this worker's order are fetched already."""
    local = loader_dataset(tmp_path / "served" / "ds", 60, 6, 0)  # 24 shards of 15 tokens
    remote = RemoteConfig(prefetch_shards=3)
    with FaultServer(tmp_path / "served", latency_s=0.2) as server:
        loader = make_remote_loader(f"{server.url}/ds", tmp_path / "cache", remote=remote, window=2)
        first = take(loader, 1)[0]
        # Token t is at global position t (loader_dataset): the shards this batch read hold its first and last.
        starts = np.cumsum([s.tokens for s in Manifest.load(local).shards])
        read = {f"/ds/{Manifest.load(local).shards[i].path}"
                for i in np.searchsorted(starts, first["tokens"][:, [0, -1]].numpy().ravel(), side="right")}
        deadline = time.monotonic() + 20
        while not set(server.gets("*.bin")) - read and time.monotonic() < deadline:
            time.sleep(0.05)
        ahead = set(server.gets("*.bin")) - read
    assert ahead and len(ahead) <= 3, (read, server.gets("*.bin"))


def test_shuffle_window_keeps_a_small_cache_useful(tmp_path):
    """With the two-level shuffle, an epoch downloads each shard about once through a cache of a few shards;
    the full shuffle, through the same cache, downloads again and again."""
    local = loader_dataset(tmp_path / "served" / "ds", 60, 6, 0)  # 20 shards of ~3 segments
    n_shards = len(list(local.glob("*.bin")))
    budget = 4 * max(p.stat().st_size for p in local.glob("*.bin"))
    gets = {}
    for window in (2, 0):
        with FaultServer(tmp_path / "served") as server:
            loader = make_remote_loader(f"{server.url}/ds", tmp_path / f"cache{window}", budget, window=window)
            batches = take(loader, 20)  # one epoch of 60 segments
            gets[window] = len(server.gets("*.bin"))
        assert sorted(i for b in batches for i in b["index"].tolist()) == list(range(60))
    assert gets[2] <= 2 * n_shards < gets[0]


def test_backoff_doubles_with_jitter():
    remote = RemoteConfig(backoff_s=1.0, backoff_max_s=6.0)
    for retry, cap in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 6.0), (9, 6.0)]:
        waits = {remote.backoff(retry) for _ in range(50)}
        assert all(cap / 2 <= w <= cap for w in waits) and len(waits) > 1


# ---- object stores: the same fsspec path as s3:// and gs:// ------------------------------------------------------
# s3fs and gcsfs are not installed here (installing s3fs would pin another botocore), so s3:// and gs://
# cannot be opened at all; fsspec's in-process "memory://" filesystem is reached through the same calls
# (url_to_fs, fs.cat_file, fs.get_file) and stands in for them. Workers: 0, as the memory store lives in one
# process.

@pytest.fixture
def memory_root():
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    yield fs, "memory://graft-test-bucket"
    fs.rm("/graft-test-bucket", recursive=True)


def upload(fs, local, url):
    for path in local.iterdir():
        fs.pipe(f"{url}/{path.name}".removeprefix("memory:/"), path.read_bytes())


def test_object_store_reads_equal_local_reads(tmp_path, memory_root):
    fs, url = memory_root
    local = loader_dataset(tmp_path / "ds", 30, 6, 2)
    upload(fs, local, f"{url}/ds")
    cache = tmp_path / "cache"
    budget = 3 * max(p.stat().st_size for p in local.glob("*.bin"))  # evicts and fetches again
    expected = take(make_remote_loader(local, cache), 15)
    got = take(make_remote_loader(f"{url}/ds", cache, cache_bytes=budget), 15)
    assert same_batches(got, expected)


def test_corrupt_object_store_shard_is_named(tmp_path, memory_root):
    fs, url = memory_root
    local = loader_dataset(tmp_path / "ds", 12, 6, 0)
    bad = sorted(local.glob("*.bin"))[1]
    data = bytearray(bad.read_bytes())
    data[3] ^= 0x10
    bad.write_bytes(bytes(data))
    upload(fs, local, f"{url}/ds")
    segments = PackedSegments(f"{url}/ds", 6, cache_dir=tmp_path / "cache")
    with pytest.raises(UserError, match="sha256") as exc:
        for i in range(len(segments)):
            segments.read(i)
    assert f"the copy at {url}/ds/{bad.name} is corrupt" in str(exc.value)


def test_missing_object_store_shard(tmp_path, memory_root):
    fs, url = memory_root
    local = loader_dataset(tmp_path / "ds", 12, 6, 0)
    victim = sorted(local.glob("*.bin"))[0]
    upload(fs, local, f"{url}/ds")
    fs.rm(f"{url}/ds/{victim.name}".removeprefix("memory:/"))
    with pytest.raises(UserError, match=f"{url}/ds/{victim.name}: not found"):
        PackedSegments(f"{url}/ds", 6, cache_dir=tmp_path / "cache").read(0)


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_object_store_without_its_fsspec_backend(tmp_path, scheme):
    """Where s3fs / gcsfs is missing, the error names the URL and the package to install."""
    backend = {"s3": "s3fs", "gs": "gcsfs"}[scheme]
    try:
        __import__(backend)
        pytest.skip(f"{backend} is installed")
    except ImportError:
        pass
    with pytest.raises(UserError, match=backend) as exc:
        PackedSegments(f"{scheme}://bucket/ds", 6, cache_dir=tmp_path / "cache")
    assert f"{scheme}://bucket/ds" in str(exc.value)
