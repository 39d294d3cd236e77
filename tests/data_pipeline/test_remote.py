"""Remote datasets over real HTTP: a server on 127.0.0.1 started by the test, a bounded verified cache."""

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from data_pipeline.errors import UserError
from data_pipeline.loader import DataConfig, Loader
from data_pipeline.packing import PackedSegments
from test_loader import collate, loader_dataset, take


class QuietHandler(SimpleHTTPRequestHandler):
    shard_gets: list = []  # paths of shard GETs, shared by the fixture's server

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.endswith(".bin"):
            QuietHandler.shard_gets.append(self.path)
        super().do_GET()


@pytest.fixture
def http_root(tmp_path):
    """(directory served, its base URL): a real HTTP server on loopback only."""
    root = tmp_path / "served"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    QuietHandler.shard_gets.clear()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def make_remote_loader(path, cache, cache_bytes=1 << 30, workers=0, rank=0, world=1):
    cfg = DataConfig(path=str(path), seq_len=8, num_workers=workers, prefetch_factor=2, cache_dir=str(cache),
                     cache_bytes=cache_bytes)
    return Loader(cfg, 6, collate, seed=7, rank=rank, world=world, micro_batch=3)


@pytest.mark.parametrize("workers", [0, 2])
def test_remote_reads_equal_local_reads(tmp_path, http_root, workers):
    served, url = http_root
    local = loader_dataset(served / "ds", 40, 6, 3)  # 14 shards of ~3 documents
    cache = tmp_path / "cache"
    shard_bytes = max(p.stat().st_size for p in local.glob("*.bin"))
    budget = 3 * shard_bytes  # far less than the dataset: shards are evicted and fetched again
    for rank in range(2):
        expected = take(make_remote_loader(local, cache, rank=rank, world=2), 20)
        remote = make_remote_loader(f"{url}/ds", cache, cache_bytes=budget, workers=workers, rank=rank, world=2)
        got = take(remote, 20)
        assert [b["index"].tolist() for b in got] == [b["index"].tolist() for b in expected]
        assert all(torch.equal(a["tokens"], b["tokens"]) for a, b in zip(got, expected, strict=True))
        cached = [p for p in cache.rglob("*") if p.is_file()]
        assert cached and sum(p.stat().st_size for p in cached) <= budget


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_remote_shard_is_named(tmp_path, http_root, damage):
    served, url = http_root
    local = loader_dataset(served / "ds", 12, 6, 0)
    bad = sorted(local.glob("*.bin"))[2]
    data = bytearray(bad.read_bytes())
    if damage == "flip":
        data[1] ^= 0x55
    else:
        del data[-8:]
    bad.write_bytes(bytes(data))
    segments = PackedSegments(f"{url}/ds", 6, cache_dir=tmp_path / "cache")
    with pytest.raises(UserError) as exc:
        for i in range(len(segments)):
            segments.read(i)
    assert f"{url}/ds/{bad.name}" in str(exc.value)
    assert ("sha256" if damage == "flip" else "truncated") in str(exc.value)
    # Nothing unverified is left in the cache under a usable name.
    assert not [p for p in (tmp_path / "cache").rglob(f"*{bad.name}")]


def test_missing_remote_dataset(tmp_path, http_root):
    _, url = http_root
    with pytest.raises(UserError, match="manifest.json") as exc:
        PackedSegments(f"{url}/nothing", 6, cache_dir=tmp_path / "cache")
    assert f"{url}/nothing" in str(exc.value)


def test_missing_remote_shard(tmp_path, http_root):
    served, url = http_root
    local = loader_dataset(served / "ds", 12, 6, 0)
    victim = sorted(local.glob("*.bin"))[0]
    victim.unlink()
    with pytest.raises(UserError, match=victim.name):
        PackedSegments(f"{url}/ds", 6, cache_dir=tmp_path / "cache").read(0)


def test_shuffle_window_keeps_a_small_cache_useful(tmp_path, http_root):
    """With the two-level shuffle, an epoch downloads each shard about once through a cache of a few shards;
    the full shuffle, through the same cache, downloads again and again."""
    served, url = http_root
    local = loader_dataset(served / "ds", 60, 6, 0)  # 20 shards of ~3 segments
    n_shards = len(list(local.glob("*.bin")))
    budget = 4 * max(p.stat().st_size for p in local.glob("*.bin"))
    gets = {}
    for window in (2, 0):
        QuietHandler.shard_gets.clear()
        cfg = DataConfig(path=f"{url}/ds", seq_len=8, num_workers=0, cache_dir=str(tmp_path / f"cache{window}"),
                         cache_bytes=budget, shuffle_window_shards=window)
        loader = Loader(cfg, 6, collate, seed=1, rank=0, world=1, micro_batch=3)
        batches = take(loader, 20)  # one epoch of 60 segments
        assert sorted(i for b in batches for i in b["index"].tolist()) == list(range(60))
        gets[window] = len(QuietHandler.shard_gets)
    assert gets[2] <= 2 * n_shards < gets[0]


# ---- object stores: the same fsspec path as s3:// and gs:// ------------------------------------------------------
# s3fs and gcsfs are not installed here (installing s3fs would pin another botocore), so s3:// and gs://
# cannot be opened at all; fsspec's in-process "memory://" filesystem is reached through the same calls
# (url_to_fs, fs.open, fs.get_file) and stands in for them. Workers: 0, as the memory store lives in one process.

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
    assert [b["index"].tolist() for b in got] == [b["index"].tolist() for b in expected]
    assert all(torch.equal(a["tokens"], b["tokens"]) for a, b in zip(got, expected, strict=True))


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
    assert f"{url}/ds/{bad.name}" in str(exc.value)


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
