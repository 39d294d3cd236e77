"""Remote datasets (http(s)://, s3://, gs://, anything fsspec opens): shards stream into a bounded local cache.

A shard is downloaded (fetch.py: retried through transient faults) to a temporary `.part-<bytes>-<name>-`
file, checked against the manifest's byte size and sha256, and only then renamed into the cache, so a file
under its final name is always verified. A copy that fails its check is fetched once more (it may have been
damaged in transit); a second failure means the copy at the URL is corrupt. Room is made and claimed under a
file lock shared by all processes: least recently used shards are deleted, and the `.part` files of downloads
in flight count as used, so the cache stays within its byte budget. A shard already being downloaded by
another process (another DataLoader worker or rank on this machine) is waited for, not fetched twice. A
process that still maps a deleted shard keeps its mapping (POSIX unlink semantics); packing.py maps few
remote shards at a time, so that space is soon returned.

Prefetch: `ShardCache.prefetch` hands the next shards of a worker's order to background threads, so their
latency overlaps the reading of the shards before them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import queue
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from data_pipeline.dataset_files import dataset_file, file_sha256
from data_pipeline.errors import UserError
from data_pipeline.fetch import RemoteConfig, fetch_file, warn
from data_pipeline.shards import DEFAULT_CACHE, ShardInfo

T = TypeVar("T")
STALE_PART_S = 600  # a partial download untouched this long belongs to a process that died
POLL_S = 0.05  # how often a process waiting for room, or for another's download, looks again


class ShardCache:
    """Local, verified copies of a remote dataset's shards under `cache_dir`, at most `max_bytes` of them."""

    def __init__(self, url: str, cache_dir: str | Path | None, max_bytes: int, remote: RemoteConfig,
                 prefetch_depth: int = 0):
        self.url = url.rstrip("/")
        key = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        self.dir = Path(cache_dir or DEFAULT_CACHE) / key
        self.max_bytes, self.remote = max_bytes, remote
        self._prefetcher = Prefetcher(self.local_path, prefetch_depth)

    def cached_path(self, info: ShardInfo) -> Path:
        # The checksum is part of the name: a re-prepared dataset at the same URL never reuses stale files.
        return self.dir / f"{info.sha256[:16]}-{Path(info.path).name}"

    def local_path(self, info: ShardInfo) -> Path:
        """The verified local copy of shard `info`, downloading it if needed."""
        path = self.cached_path(info)
        try:
            os.utime(path)  # recently used: evicted last
            return path
        except FileNotFoundError:  # not cached, or just evicted by another worker
            pass
        self.dir.mkdir(parents=True, exist_ok=True)
        if info.bytes > self.max_bytes:
            raise UserError(f"shard {info.path} ({info.bytes:,} bytes) is larger than the whole shard cache "
                            f"({self.max_bytes:,} bytes); raise data.cache_bytes")
        part = self._reserve(info.bytes, path)
        if part is None:  # another worker fetched it meanwhile
            return path
        try:
            self._download(info, part, path)
        finally:
            part.unlink(missing_ok=True)
        return path

    def prefetch(self, infos: Iterable[ShardInfo]) -> None:
        """Fetch these shards (the next of this worker's order, soonest first) in the background, as many as
        the prefetch depth allows; those already cached are skipped."""
        self._prefetcher.want(info for info in infos if not self.cached_path(info).is_file())

    def stop_prefetch(self) -> None:
        """Drop the prefetches not started yet: the reader that wanted them has stopped."""
        self._prefetcher.cancel()

    def open(self, info: ShardInfo, open_fn: Callable[[Path], T]) -> T:
        """`open_fn(local copy of info)`, run under the cache lock so no other worker evicts the file between
        its download and its opening; once opened (memory-mapped), deleting it is harmless."""
        self._prefetcher.wait(info)  # its error, if the prefetch failed
        while True:
            path = self.local_path(info)
            with self._locked():
                if path.is_file():
                    return open_fn(path)

    @contextlib.contextmanager
    def _locked(self):
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _reserve(self, need: int, path: Path) -> Path | None:
        """Make room for `need` bytes and claim it with an empty `.part-<bytes>-<name>-` file, under a lock
        shared by every process using this cache (each DataLoader worker fetches on its own). None when the
        file is there by the time it could be claimed."""
        while True:
            with self._locked():
                if path.is_file():
                    return None
                if not self._downloading(path) and self._evict(need):
                    # The owner's pid in the name: a process killed mid-download (a DataLoader worker shut down
                    # with its prefetch threads) frees its room at once, not after STALE_PART_S.
                    fd, part = tempfile.mkstemp(dir=self.dir, prefix=f".part-{need}-{path.name}-{os.getpid()}-")
                    os.close(fd)
                    return Path(part)
            # The room is claimed by downloads in flight, or this very file is one of them: wait for them.
            time.sleep(POLL_S)

    def _downloading(self, path: Path) -> bool:
        """Whether another process is downloading `path` now. Runs under the lock."""
        return any(self._live_part(p) for p in self.dir.glob(f".part-*-{path.name}-*"))

    def _download(self, info: ShardInfo, part: Path, path: Path) -> None:
        url = dataset_file(self.url, info.path)
        missing = f"the manifest at {self.url} lists it: re-upload the whole dataset written by `graft prepare`"
        for attempt in (1, 2):
            fetch_file(url, part, self.remote, missing)
            problem = _content_problem(part, info)
            if problem is None:
                os.replace(part, path)
                return
            if attempt == 1:
                warn(f"{url}: {problem}; fetching it once more")
        raise UserError(f"shard {info.path}: the copy at {url} is corrupt ({problem}, on two downloads); re-upload "
                        "the dataset written by `graft prepare`")

    def _live_part(self, p: Path) -> bool:
        """Whether `p`, a `.part` file, belongs to a download in flight (its process is alive and it is recent);
        a stale one is deleted."""
        try:
            if _process_alive(int(p.name.rsplit("-", 2)[1])) and time.time() - p.stat().st_mtime <= STALE_PART_S:
                return True
        except FileNotFoundError:
            return False
        p.unlink(missing_ok=True)  # left by a killed process
        return False

    def _evict(self, need: int) -> bool:
        """Delete least recently used shards until `need` more bytes fit; False if downloads in flight hold
        the room. Runs under the lock."""
        files, reserved = [], 0
        for p in self.dir.iterdir():
            if p.name == ".lock":
                continue
            if p.name.startswith(".part-"):
                if self._live_part(p):
                    reserved += int(p.name.split("-")[1])
                continue
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            files.append((st.st_mtime, st.st_size, p))
        used = reserved + sum(size for _, size, _ in files)
        for _, size, p in sorted(files):
            if used + need <= self.max_bytes:
                break
            p.unlink(missing_ok=True)
            used -= size
        return used + need <= self.max_bytes


def _process_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (the cache is a local directory)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _content_problem(path: Path, info: ShardInfo) -> str | None:
    """What is wrong with a complete download of shard `info` at `path`, or None."""
    size = path.stat().st_size
    if size != info.bytes:
        return f"it has {size:,} bytes, the manifest says {info.bytes:,}"
    if file_sha256(path) != info.sha256:
        return "its sha256 differs from the manifest's"
    return None


class Prefetcher:
    """Runs `fetch(info)` for up to `depth` shards at once in background threads, soonest wanted first.

    A shard's fetch stays counted against `depth` until `wait` collects it. Threads and queues belong to the
    process that made them: a forked DataLoader worker starts its own on first use (the parent's threads do
    not exist in the child). The threads are daemons: a process that ends does not wait for a download.
    """

    def __init__(self, fetch: Callable[[ShardInfo], object], depth: int):
        self.fetch, self.depth = fetch, depth
        self._pid = None

    def _start(self) -> None:
        self._pid = os.getpid()
        self._pending: dict[str, Future] = {}
        self._todo: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(self.depth):
            threading.Thread(target=self._work, daemon=True, name="graft-prefetch").start()

    def want(self, infos: Iterable[ShardInfo]) -> None:
        if not self.depth:
            return
        if self._pid != os.getpid():
            self._start()
        for info in infos:
            if len(self._pending) >= self.depth:
                break
            if info.path not in self._pending:
                self._pending[info.path] = future = Future()
                self._todo.put((info, future))

    def cancel(self) -> None:
        if self._pid != os.getpid():
            return
        for path, future in list(self._pending.items()):
            if future.cancel():  # not started: a worker thread skips it
                del self._pending[path]

    def wait(self, info: ShardInfo) -> None:
        """Until the prefetch of `info`, if one is pending, is done; raises its error."""
        if self._pid == os.getpid() and info.path in self._pending:
            self._pending.pop(info.path).result()

    def _work(self) -> None:
        while True:
            info, future = self._todo.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                self.fetch(info)
                future.set_result(None)
            except BaseException as exc:  # noqa: B902 - handed to the reader of this shard, who raises it
                future.set_exception(exc)
