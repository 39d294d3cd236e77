"""The files of a dataset, local or remote: naming them, reading small ones, writing atomically, hashing.

A leaf for shards.py (the manifest) and remote.py (the shard cache), which both need these.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from data_pipeline.errors import UserError
from data_pipeline.fetch import RemoteConfig, fetch_bytes


def is_url(path: str) -> bool:
    """Remote datasets are named by URL (http(s)://, s3://, gs://, ...); anything else is a local path."""
    return "://" in path


def dataset_file(root: str | Path, name: str) -> str:
    """Where the file `name` of the dataset at `root` (a directory or a URL) is, for messages."""
    return f"{str(root).rstrip('/')}/{name}" if is_url(str(root)) else str(Path(root) / name)


def read_dataset_text(root: str | Path, name: str, remote: RemoteConfig | None = None) -> str:
    """The text of the file `name` (its manifest, its tokenizer.json) of the dataset at `root`, a local
    directory or a URL (fetched with `remote`'s retries and timeouts)."""
    if is_url(str(root)):
        data = fetch_bytes(dataset_file(root, name), remote or RemoteConfig(),
                           f"is {root} a dataset written by `graft prepare`? check data.path")
        return data.decode(errors="replace")  # junk: the parser's clear error
    path = Path(root) / name
    if not path.is_file():
        raise UserError(f"{path} not found: {root} is not a prepared dataset; run `graft prepare` first")
    return path.read_bytes().decode(errors="replace")  # as a URL's


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name, then rename: readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
