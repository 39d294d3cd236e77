"""Fetching one file of a remote dataset (http(s)://, s3://, gs://, anything fsspec opens), through a flaky network.

Transient faults are retried with exponential backoff and jitter: HTTP 5xx and 429, a refused or reset
connection, a read that stalls beyond `read_timeout_s`, a body cut short. Each retry is logged once, as a
`warning:` line on stderr naming the URL and the reason. Permanent faults (404, 401/403, a host name that does
not resolve, missing credentials) and transient ones that outlast `attempts` raise a UserError naming the URL,
the cause and the fix, at once: the run ends with one `error:` line and exit code 2.
"""

from __future__ import annotations

import errno
import random
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import urlsplit

from data_pipeline.errors import UserError

T = TypeVar("T")
# Exceptions of the object stores' auth libraries (botocore for s3fs, google-auth for gcsfs), matched by name:
# neither library is a dependency of Graft.
CREDENTIAL_ERRORS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                     "DefaultCredentialsError", "RefreshError"}
LOCAL_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}  # writing the local copy, not the network


@dataclass
class RemoteConfig:
    attempts: int = 10  # tries per file before a transient fault (5xx, 429, reset, stall) fails the run
    backoff_s: float = 1.0  # wait before the first retry; doubles with each retry, half of it random (jitter)
    backoff_max_s: float = 30.0  # the longest wait between two tries
    connect_timeout_s: float = 10.0  # http(s): a connection not made in this time is a transient fault
    read_timeout_s: float = 60.0  # http(s): a read that gets no byte for this long has stalled: retried
    prefetch_shards: int = 2  # shards of a worker's order fetched ahead in the background (0: off)

    def __post_init__(self):
        if self.attempts < 1:
            raise UserError(f"data.remote.attempts must be at least 1, got {self.attempts}")
        for name in ("backoff_s", "backoff_max_s", "connect_timeout_s", "read_timeout_s"):
            if getattr(self, name) <= 0:
                raise UserError(f"data.remote.{name} must be positive, got {getattr(self, name)}")
        if self.prefetch_shards < 0:
            raise UserError(f"data.remote.prefetch_shards must be >= 0 (0: off), got {self.prefetch_shards}")

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1, 2, ...): between half and all of the doubled delay."""
        cap = min(self.backoff_max_s, self.backoff_s * 2 ** (retry - 1))
        return cap / 2 + random.uniform(0, cap / 2)


@dataclass
class Fault:
    transient: bool
    cause: str  # what went wrong, for the message
    fix: str = ""  # what to do, for permanent faults whose fix does not depend on the file


def fetch_bytes(url: str, remote: RemoteConfig, missing: str) -> bytes:
    """The whole file at `url`. `missing` is the fix to print when it does not exist."""
    return with_retries(url, remote, missing, lambda fs, path: fs.cat_file(path))


def fetch_file(url: str, dest: Path, remote: RemoteConfig, missing: str) -> None:
    """The file at `url`, streamed into `dest` (never held in memory); `dest` is rewritten by every try."""
    with_retries(url, remote, missing, lambda fs, path: fs.get_file(path, str(dest)))


def with_retries(url: str, remote: RemoteConfig, missing: str, call: Callable[[object, str], T]) -> T:
    """`call(filesystem, path)` for `url`, retried on transient faults; a UserError on permanent ones."""
    fs, path = filesystem(url, remote)
    started = time.monotonic()
    for attempt in range(1, remote.attempts + 1):
        try:
            return call(fs, path)
        except Exception as exc:  # noqa: B902 - sorted below; what is not a fault of the store is re-raised
            fault = classify(exc, url)
            if fault is None:
                raise
            if not fault.transient:
                raise UserError(f"{url}: {fault.cause}; {fault.fix or missing}") from exc
            if attempt == remote.attempts:
                raise UserError(f"{url}: {fault.cause}, still after {attempt} tries in "
                                f"{time.monotonic() - started:.0f} s; check that the store is up, or allow more "
                                "tries with data.remote.attempts / data.remote.backoff_max_s (a stopped run "
                                "continues with --resume)") from exc
            wait = remote.backoff(attempt)
            warn(f"{url}: {fault.cause}; try {attempt + 1} of {remote.attempts} in {wait:.1f} s")
            time.sleep(wait)
    raise AssertionError("unreachable")


def warn(message: str) -> None:
    """One `warning:` line on stderr, written whole: prefetch threads may warn at the same time."""
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()


def filesystem(url: str, remote: RemoteConfig):
    """(fsspec filesystem, path in it) for `url`, with `remote`'s timeouts where the protocol takes them."""
    # fsspec and aiohttp are imported here, by the first fetch: they take about a second to import, which the
    # command line, the launcher and every rank reading a local dataset would otherwise pay.
    import fsspec

    options = {}
    if urlsplit(url).scheme in ("http", "https"):
        import aiohttp

        # No bound on the total: a large shard over a slow link may take long, as long as bytes keep coming.
        options["client_kwargs"] = {"timeout": aiohttp.ClientTimeout(
            total=None, sock_connect=remote.connect_timeout_s, sock_read=remote.read_timeout_s)}
    try:
        return fsspec.core.url_to_fs(url, **options)
    except (ImportError, ValueError) as exc:  # e.g. s3:// without s3fs installed
        raise UserError(f"cannot open {url}: {exc}") from exc


def classify(exc: BaseException, url: str) -> Fault | None:
    """What `exc`, raised while fetching `url`, says about the store; None if it is no fault of the store."""
    import asyncio

    import aiohttp  # loaded already by the fetch that raised `exc`, unless its store's library does not use it

    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & CREDENTIAL_ERRORS:
        return Fault(False, f"no credentials ({exc})", "configure credentials for this store (for s3: "
                     "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or ~/.aws/credentials; for gs: "
                     "`gcloud auth application-default login`)")
    if isinstance(exc, aiohttp.ClientResponseError):
        status = f"HTTP {exc.status} {exc.message}".strip()
        if exc.status == 429 or exc.status >= 500:
            return Fault(True, status)
        if exc.status == 401:
            return Fault(False, f"{status}: the server wants credentials", "use a URL the server lets you read "
                         "without them (a presigned URL, say), or an s3:// / gs:// URL with configured credentials")
        if exc.status == 403:
            return Fault(False, f"{status}: access denied", "check the credentials and the permissions of the "
                         "bucket or directory")
        return Fault(False, status, "check the URL")
    if isinstance(exc, FileNotFoundError):  # fsspec's form of HTTP 404 and of a missing object
        return Fault(False, "not found (HTTP 404 or no such object)")
    if isinstance(exc, PermissionError):  # s3fs / gcsfs: 403
        return Fault(False, f"access denied ({exc})", "check the credentials and the permissions of the bucket")
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, socket.gaierror) or \
            isinstance(exc, socket.gaierror):
        return Fault(False, f"the host name {urlsplit(url).hostname!r} does not resolve",
                     "check the host name in the URL, and that this machine's DNS can resolve it")
    if isinstance(exc, OSError) and exc.errno in LOCAL_DISK_ERRNOS:
        return Fault(False, f"cannot write the local copy ({exc})", "free space in the cache directory, or "
                     "point data.cache_dir at a disk with room (data.cache_bytes bounds what it holds)")
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):  # aiohttp's stall and connect timeouts
        return Fault(True, "stalled: no data within data.remote.read_timeout_s (or no connection within "
                     "data.remote.connect_timeout_s)")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return Fault(True, f"the body was cut short ({exc})")
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, unreachable
        return Fault(True, f"cannot connect ({exc.os_error})")
    if isinstance(exc, (aiohttp.ClientError, ConnectionError)):  # reset, server disconnected
        return Fault(True, f"{type(exc).__name__}: {exc}")
    return None
