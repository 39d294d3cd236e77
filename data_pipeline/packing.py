"""The dataset seen as fixed-length segments: the concatenation of all documents, cut every `length` tokens.

Segment i covers global tokens [i * length, (i + 1) * length) of the shards in manifest order, so any
segment is found in O(log shards) with no index to build. Document boundaries inside a segment are kept
so collators can separate documents.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from data_pipeline.errors import UserError
from data_pipeline.shards import Manifest, Shard, is_url, open_shard

DEFAULT_CACHE_BYTES = 16 << 30
MAX_MAPPED_REMOTE = 4


@dataclass
class Segment:
    index: int  # global sample index (position in the seeded order, across epochs): seeds its noise
    tokens: np.ndarray  # raw token ids, `length` of them
    doc_starts: np.ndarray  # positions in `tokens` where a document begins


class PackedSegments:
    def __init__(self, root: str | Path, length: int, cache_dir: str | Path | None = None,
                 cache_bytes: int = DEFAULT_CACHE_BYTES):
        """`root` is a local directory or a URL; a URL's shards go through a cache of `cache_bytes` in `cache_dir`."""
        self.remote = is_url(str(root))
        self.root = str(root) if self.remote else Path(root)
        self.manifest = Manifest.load(self.root)
        if self.remote:
            from data_pipeline.remote import ShardCache

            self.cache = ShardCache(self.root, cache_dir, cache_bytes)
        self.length = length
        self.dtype = np.dtype(self.manifest.dtype)
        self._starts = np.cumsum([0] + [s.tokens for s in self.manifest.shards])
        self._start_list = [int(x) for x in self._starts]  # bisect on a list beats numpy for one scalar
        self._shards: list[Shard | None] = [None] * len(self.manifest.shards)
        if len(self) == 0:
            raise UserError(f"dataset {self.root} has {self._starts[-1]} tokens, fewer than one sample of "
                            f"{length}; use more text or a shorter data.seq_len")

    def __len__(self) -> int:
        return int(self._starts[-1]) // self.length

    def _shard(self, s: int) -> Shard:
        # Opened lazily, so each DataLoader worker maps its own view after fork.
        if self._shards[s] is None:
            info = self.manifest.shards[s]
            if self.remote:
                # Few maps at a time: a mapped file keeps its disk space after the cache evicts it.
                for other in [i for i, m in enumerate(self._shards) if m is not None][:-MAX_MAPPED_REMOTE]:
                    self._shards[other] = None
                self._shards[s] = self.cache.open(  # downloaded and verified
                    info, lambda local: open_shard(local.parent, replace(info, path=local.name), self.dtype))
            else:
                self._shards[s] = open_shard(self.root, info, self.dtype)
        return self._shards[s]

    def read(self, segment: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, doc_starts) of one segment; it may span several shards."""
        begin, end = segment * self.length, (segment + 1) * self.length
        pieces, doc_starts = [], []
        s = bisect.bisect_right(self._start_list, begin) - 1
        pos = begin
        while pos < end:
            shard = self._shard(s)
            base = self._start_list[s]
            lo, hi = pos - base, min(end, self._start_list[s + 1]) - base
            pieces.append(shard.tokens[lo:hi])
            offsets = shard.offsets
            first, last = np.searchsorted(offsets, (lo, hi), side="left")
            doc_starts.append(offsets[first:last].astype(np.int64) - lo + (pos - begin))
            pos += hi - lo
            s += 1
        if len(pieces) == 1:  # the common case: one shard
            return pieces[0].astype(np.int64), doc_starts[0]
        return np.concatenate(pieces).astype(np.int64), np.concatenate(doc_starts)
