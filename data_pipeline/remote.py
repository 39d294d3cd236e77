"""Remote datasets (http(s)://, s3://, gs://, anything fsspec opens): shards stream into a bounded local cache.

A shard is downloaded to a temporary `.part-<bytes>-` name, checked against the manifest's byte size and
sha256, and only then renamed into the cache, so a file under its final name is always verified and several
DataLoader workers may fetch at once without reading each other's half-written files. Room is made and
claimed under a file lock shared by all processes: least recently used shards are deleted, and the `.part`
files of downloads in flight count as used, so the cache stays within its byte budget. A process that
still maps a deleted shard keeps its mapping (POSIX unlink semantics); packing.py maps few remote shards
at a time, so that space is soon returned.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, TypeVar

from data_pipeline.errors import UserError
from data_pipeline.shards import DEFAULT_CACHE, ShardInfo, dataset_file, file_sha256

T = TypeVar("T")
STALE_PART_S = 600  # a partial download untouched this long belongs to a process that died


def _fs_and_path(url: str):
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:  # e.g. s3:// without s3fs installed
        raise UserError(f"cannot open {url}: {exc}") from exc


def read_remote_text(url: str, name: str) -> str:
    """The text of the file `name` in the remote dataset `url` (its manifest, its tokenizer.json)."""
    where = dataset_file(url, name)
    fs, path = _fs_and_path(where)
    try:
        with fs.open(path, "rb") as f:
            return f.read().decode()
    except (OSError, UnicodeDecodeError) as exc:  # fsspec maps a 404 to FileNotFoundError
        raise UserError(f"cannot read {where} ({exc}); is {url} a dataset written by `graft prepare`?") from exc


class ShardCache:
    """Local, verified copies of a remote dataset's shards under `cache_dir`, at most `max_bytes` of them."""

    def __init__(self, url: str, cache_dir: str | Path | None, max_bytes: int):
        self.url = url.rstrip("/")
        key = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        self.dir = Path(cache_dir or DEFAULT_CACHE) / key
        self.max_bytes = max_bytes

    def local_path(self, info: ShardInfo) -> Path:
        """The verified local copy of shard `info`, downloading it if needed."""
        # The checksum is part of the name: a re-prepared dataset at the same URL never reuses stale files.
        path = self.dir / f"{info.sha256[:16]}-{Path(info.path).name}"
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
        self._download(info, part, path)
        return path

    def open(self, info: ShardInfo, open_fn: Callable[[Path], T]) -> T:
        """`open_fn(local copy of info)`, run under the cache lock so no other worker evicts the file between
        its download and its opening; once opened (memory-mapped), deleting it is harmless."""
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
        """Make room for `need` bytes and claim it with an empty `.part-<bytes>-` file, under a lock shared by
        every process using this cache (each DataLoader worker fetches on its own)."""
        while True:
            with self._locked():
                if path.is_file():
                    return None
                if self._evict(need):
                    fd, part = tempfile.mkstemp(dir=self.dir, prefix=f".part-{need}-")
                    os.close(fd)
                    return Path(part)
            time.sleep(0.05)  # the room is claimed by downloads in flight: wait for them to land

    def _download(self, info: ShardInfo, part: Path, path: Path) -> None:
        url = dataset_file(self.url, info.path)
        fs, remote = _fs_and_path(url)
        try:
            fs.get_file(remote, str(part))  # streams to disk: a shard is never held in memory
            size = part.stat().st_size
            if size != info.bytes:
                raise UserError(f"shard {url} has {size} bytes, the manifest says {info.bytes}: it is truncated or "
                                "corrupt; re-upload the dataset written by `graft prepare`")
            if file_sha256(part) != info.sha256:
                raise UserError(f"shard {url} fails its sha256 check: it is corrupt; re-upload the dataset "
                                "written by `graft prepare`")
            os.replace(part, path)
        except OSError as exc:  # fsspec maps HTTP 404 to FileNotFoundError
            raise UserError(f"cannot download shard {url} ({exc})") from exc
        finally:
            part.unlink(missing_ok=True)

    def _evict(self, need: int) -> bool:
        """Delete least recently used shards until `need` more bytes fit; False if downloads in flight hold
        the room. Runs under the lock."""
        files, reserved = [], 0
        for p in self.dir.iterdir():
            if p.name == ".lock":
                continue
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            if p.name.startswith(".part-"):
                if time.time() - st.st_mtime > STALE_PART_S:  # left by a killed process
                    p.unlink(missing_ok=True)
                else:
                    reserved += int(p.name.split("-")[1])
                continue
            files.append((st.st_mtime, st.st_size, p))
        used = reserved + sum(size for _, size, _ in files)
        for _, size, p in sorted(files):
            if used + need <= self.max_bytes:
                break
            p.unlink(missing_ok=True)
            used -= size
        return used + need <= self.max_bytes
