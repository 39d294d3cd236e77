"""Token shards and their manifest.

A shard is one file: the tokens of whole documents as a flat little-endian array (uint16 when the
vocabulary fits, else uint32), zero-padded to 8 bytes, followed by the document offsets as little-endian
uint64 (documents + 1 entries, the first 0). Format 2 appends one byte of boundary flags per token (WORD:
a word begins here, SENTENCE: a sentence begins here, SIDE: the second side of a parallel pair begins
here), and for parallel and multilingual datasets one byte per token naming its language (an index into the
manifest's `languages`). `manifest.json` beside the shards records the format version, tokenizer hash, vocabulary
size, dtype, special token ids, languages, and per shard its relative path, token and document counts,
byte size and sha256. Format 1 datasets (no flags) are still read.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from data_pipeline.dataset_files import dataset_file, file_sha256, read_dataset_text, write_atomic
from data_pipeline.errors import UserError
from data_pipeline.fetch import RemoteConfig

FORMAT_VERSION = 2  # what `graft prepare` writes
READABLE_VERSIONS = (1, 2)
WORD, SENTENCE, SIDE = 1, 2, 4  # bits of a format-2 shard's per-token flags
MANIFEST = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"  # beside it: the tokenizer the dataset was prepared with
# Graft's local cache: remote shards, and stamps of local shards that passed their sha256 check.
DEFAULT_CACHE = Path(os.environ.get("GRAFT_CACHE", Path.home() / ".cache" / "graft"))


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


@dataclass
class ShardInfo:
    path: str  # relative to the dataset root
    tokens: int
    documents: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    vocab_size: int
    dtype: str
    tokenizer_sha256: str
    special_tokens: dict[str, int]
    shards: list[ShardInfo] = field(default_factory=list)
    format_version: int = 1  # 2: the shards carry word/sentence flags (a manifest written by hand has none)
    languages: list[str] = field(default_factory=list)  # parallel or multilingual datasets: language index -> code
    multilingual: bool = False  # monolingual text of several languages (a language per document), not pairs

    @property
    def has_boundaries(self) -> bool:
        """Whether the shards record word and sentence starts (format 2)."""
        return self.format_version >= 2

    @property
    def parallel(self) -> bool:
        """Whether the documents are parallel pairs (TLM's data)."""
        return bool(self.languages) and not self.multilingual

    @property
    def total_tokens(self) -> int:
        return sum(s.tokens for s in self.shards)

    @property
    def total_documents(self) -> int:
        return sum(s.documents for s in self.shards)

    def save(self, root: Path) -> None:
        write_atomic(root / MANIFEST, json.dumps(asdict(self), indent=1).encode())

    @classmethod
    def load(cls, root: str | Path, remote: RemoteConfig | None = None) -> "Manifest":
        """The manifest of the dataset at `root`, a directory or a URL (fetched with `remote`'s retries)."""
        return cls.parse(read_dataset_text(root, MANIFEST, remote), dataset_file(root, MANIFEST))

    @classmethod
    def parse(cls, text: str, path: str) -> "Manifest":
        """The manifest in `text`, read from `path` (a file or a URL, named in errors)."""
        try:
            raw = json.loads(text)
            raw["shards"] = [ShardInfo(**s) for s in raw["shards"]]
            manifest = cls(**raw)
        except (ValueError, TypeError, KeyError) as exc:
            raise UserError(f"{path} is not a valid Graft manifest ({exc}); re-run `graft prepare`") from exc
        if manifest.format_version not in READABLE_VERSIONS:
            raise UserError(f"{path} has format version {manifest.format_version}, this Graft reads "
                            f"{' and '.join(map(str, READABLE_VERSIONS))}; re-run `graft prepare` with this version")
        for shard in manifest.shards:
            if Path(shard.path).is_absolute() or ".." in Path(shard.path).parts:
                raise UserError(f"{path}: shard path {shard.path!r} escapes the dataset root")
        return manifest


def write_shard(path: Path, docs: list[np.ndarray], dtype: np.dtype, flags: list[np.ndarray] | None = None,
                languages: list[np.ndarray] | None = None) -> ShardInfo:
    """Write the documents (token arrays) as one shard file; returns its manifest entry (path is the name).
    Format 2 passes `flags` (uint8 per token, as the tokens) and, for parallel text, `languages`."""
    tokens = np.concatenate(docs).astype(dtype, copy=False) if docs else np.zeros(0, dtype)
    offsets = np.zeros(len(docs) + 1, dtype="<u8")
    np.cumsum([len(d) for d in docs], out=offsets[1:])
    pad = (-tokens.nbytes) % 8
    data = tokens.tobytes() + b"\0" * pad + offsets.tobytes()
    for extra in (flags, languages):
        if extra is not None:
            data += (np.concatenate(extra) if extra else np.zeros(0)).astype(np.uint8).tobytes()
    write_atomic(path, data)
    return ShardInfo(path=path.name, tokens=len(tokens), documents=len(docs), bytes=len(data),
                     sha256=hashlib.sha256(data).hexdigest())


@dataclass
class Shard:
    """A memory-mapped shard: `tokens` and `offsets` are read-only views of the file."""

    tokens: np.ndarray
    offsets: np.ndarray
    flags: np.ndarray | None = None  # format 2: uint8 WORD | SENTENCE | SIDE bits per token
    languages: np.ndarray | None = None  # parallel datasets: uint8 language index per token


def open_shard(root: Path, info: ShardInfo, dtype: np.dtype, verify: bool = False,
               stamps: Path | None = None, flags: bool = False, languages: bool = False) -> Shard:
    """The shard `info` under `root`, memory-mapped. Its size is always checked; with `verify` its sha256 too,
    and with `stamps` (a directory) only once per file version: see `verify_once`. `flags` and `languages`
    say whether the shard carries them (format 2, parallel text)."""
    path = root / info.path
    if not path.is_file():
        raise UserError(f"shard {path} listed in the manifest is missing; re-run `graft prepare`")
    size = path.stat().st_size
    if size != info.bytes:
        raise UserError(f"shard {path} has {size} bytes, the manifest says {info.bytes}: it is truncated or "
                        "corrupt; re-run `graft prepare`")
    if verify:
        verify_once(path, info, stamps) if stamps else verify_sha256(path, info)
    # A plain ndarray view of the map: slicing np.memmap itself costs a Python-level hook per slice.
    raw = np.asarray(np.memmap(path, dtype=np.uint8, mode="r"))
    token_bytes = info.tokens * dtype.itemsize
    tokens = raw[:token_bytes].view(dtype)
    start = token_bytes + (-token_bytes) % 8
    end = start + (info.documents + 1) * 8
    offsets = raw[start:end].view("<u8")
    shard = Shard(tokens=tokens, offsets=offsets)
    if flags:
        shard.flags, end = raw[end:end + info.tokens], end + info.tokens
    if languages:
        shard.languages = raw[end:end + info.tokens]
    return shard


def verify_sha256(path: Path, info: ShardInfo) -> None:
    if file_sha256(path) != info.sha256:
        raise UserError(f"shard {path} fails its sha256 check: it is corrupt; re-run `graft prepare`")


def verify_once(path: Path, info: ShardInfo, stamps: Path) -> None:
    """The sha256 check, paid once per file version: a passing file leaves an empty stamp in `stamps` named
    by a hash of its path, inode, size, mtime and expected checksum. A file rewritten since (new mtime or
    inode) or a re-prepared dataset (new checksum) is hashed again; a change that keeps size and mtime (bit
    rot) goes unseen after the first check."""
    st = path.stat()
    key = f"{path.resolve()}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0{info.sha256}"
    stamp = stamps / hashlib.sha256(key.encode()).hexdigest()
    if stamp.exists():
        return
    verify_sha256(path, info)
    stamps.mkdir(parents=True, exist_ok=True)
    stamp.touch()
