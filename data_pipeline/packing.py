"""The dataset seen as fixed-length segments: the concatenation of all documents, cut every `length` tokens.

Segment i covers global tokens [i * length, (i + 1) * length) of the shards in manifest order, so any
segment is found in O(log shards) with no index to build. Document boundaries inside a segment are kept
so collators can separate documents; so are, for format-2 datasets, word and sentence starts (and for
parallel text the start of each pair's second side and every token's language).

The loader reads whole batches (`read_batch`): one vectorised gather per shard from its memory map and one
boolean [batch, length] mask of document starts, so no Python runs per sample on the training path.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from data_pipeline.dataset_files import is_url
from data_pipeline.errors import UserError
from data_pipeline.fetch import RemoteConfig
from data_pipeline.remote import ShardCache
from data_pipeline.shards import DEFAULT_CACHE, SENTENCE, SIDE, WORD, Manifest, Shard, open_shard

DEFAULT_CACHE_BYTES = 16 << 30
MAX_MAPPED_REMOTE = 4


@dataclass
class Segment:
    index: int  # global sample index (position in the seeded order, across epochs): seeds its noise
    tokens: np.ndarray  # raw token ids, `length` of them
    doc_starts: np.ndarray  # positions in `tokens` where a document begins


@dataclass
class SegmentBatch:
    """What a collator gets: a batch of equal-length segments as arrays.

    The boundary arrays are None for a format-1 dataset (see collators/boundaries.py for the error an objective
    that needs them raises)."""

    indices: np.ndarray  # [B] int64 global sample indices (seed each row's noise)
    tokens: np.ndarray  # [B, length] int64 raw token ids
    doc_start: np.ndarray  # [B, length] bool: a document begins at this position
    word_start: np.ndarray | None = None  # [B, length] bool: a word (pre-token) begins here; format 2
    sentence_start: np.ndarray | None = None  # [B, length] bool: a sentence begins here; format 2
    side_start: np.ndarray | None = None  # [B, length] bool: a parallel pair's second side begins here
    language: np.ndarray | None = None  # [B, length] int64 language index (manifest.languages); parallel/multilingual
    segment_ids: np.ndarray | None = None  # [B] int64 which segment of the dataset each row is (static masking)
    partner: "SegmentBatch | None" = None  # per row, another segment of the corpus (NSP's negatives), if asked

    def __len__(self) -> int:
        return len(self.indices)

    def segments(self) -> list[Segment]:
        """Row by row, for collators whose work is per sample anyway (span sampling)."""
        return [Segment(int(i), t, np.flatnonzero(d))
                for i, t, d in zip(self.indices, self.tokens, self.doc_start, strict=True)]

    @classmethod
    def of(cls, segments: list[Segment]) -> "SegmentBatch":
        """The batch of equal-length `segments` (tests, tools)."""
        tokens = np.stack([np.asarray(s.tokens, dtype=np.int64) for s in segments])
        doc_start = np.zeros(tokens.shape, dtype=bool)
        for row, s in enumerate(segments):
            doc_start[row, np.asarray(s.doc_starts, dtype=np.int64)] = True
        return cls(np.array([s.index for s in segments], dtype=np.int64), tokens, doc_start)

    @classmethod
    def from_flags(cls, indices: np.ndarray, tokens: np.ndarray, doc_start: np.ndarray, flags: np.ndarray | None,
                   language: np.ndarray | None = None, segment_ids: np.ndarray | None = None) -> "SegmentBatch":
        """The batch whose boundaries are a format-2 shard's flag bytes `flags` [B, length] (None: format 1)."""
        if flags is None:
            return cls(indices, tokens, doc_start, segment_ids=segment_ids)
        side = flags & SIDE != 0
        return cls(indices, tokens, doc_start, flags & WORD != 0, flags & SENTENCE != 0,
                   side if language is not None else None, language, segment_ids)


class PackedSegments:
    def __init__(self, root: str | Path, length: int, cache_dir: str | Path | None = None,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, remote: RemoteConfig | None = None):
        """`root` is a local directory or a URL; a URL's shards go through a cache of `cache_bytes` in `cache_dir`,
        where local shards' checksum stamps live too, fetched with `remote`'s retries, timeouts and prefetch."""
        self.remote = is_url(str(root))
        self.root = str(root) if self.remote else Path(root)
        remote = remote or RemoteConfig()
        self.manifest = Manifest.load(self.root, remote)
        if self.remote:
            # Prefetch within the cache: room for the shard being read and the ones fetched ahead of it.
            largest = max((s.bytes for s in self.manifest.shards), default=1)
            depth = max(0, min(remote.prefetch_shards, cache_bytes // max(1, largest) - 1))
            self.cache = ShardCache(self.root, cache_dir, cache_bytes, remote, depth)
        self.stamps = Path(cache_dir or DEFAULT_CACHE) / "verified"
        self.length = length
        self.dtype = np.dtype(self.manifest.dtype)
        self.flags, self.languages = self.manifest.has_boundaries, bool(self.manifest.languages)
        self.parallel = self.manifest.parallel
        self._starts = np.cumsum([0] + [s.tokens for s in self.manifest.shards])
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
                    info, lambda local: open_shard(local.parent, replace(info, path=local.name), self.dtype,
                                                   flags=self.flags, languages=self.languages))
            else:
                self._shards[s] = open_shard(self.root, info, self.dtype, verify=True, stamps=self.stamps,
                                             flags=self.flags, languages=self.languages)
        return self._shards[s]

    def prefetch(self, segments: np.ndarray) -> None:
        """A remote dataset's shards holding `segments` (the reads to come, soonest first) are fetched in the
        background; nothing for a local one."""
        if not self.remote:
            return
        begin = np.asarray(segments, dtype=np.int64).ravel() * self.length
        # A segment's first and last token's shards, in the order they will be needed, each once.
        shards = np.stack([np.searchsorted(self._starts, begin, side="right") - 1,
                           np.searchsorted(self._starts, begin + self.length - 1, side="right") - 1], 1).ravel()
        _, first = np.unique(shards, return_index=True)
        needed = shards[np.sort(first)]
        self.cache.prefetch([self.manifest.shards[s] for s in needed if self._shards[s] is None])

    def stop_prefetch(self) -> None:
        """The reader stopped: fetch nothing more for it."""
        if self.remote:
            self.cache.stop_prefetch()

    def read(self, segment: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, doc_starts) of one segment; it may span several shards."""
        batch = self.read_batch(np.array([segment]), np.array([segment]))
        return batch.tokens[0], np.flatnonzero(batch.doc_start[0])

    def read_batch(self, segments: np.ndarray, indices: np.ndarray) -> SegmentBatch:
        """Segments `segments` as the rows of a batch whose samples are `indices` (global sample numbers)."""
        segments = np.asarray(segments, dtype=np.int64)
        rows, length = len(segments), self.length
        tokens = np.empty((rows, length), dtype=np.int64)
        doc_start = np.zeros((rows, length), dtype=bool)
        flags = np.empty((rows, length), dtype=np.uint8) if self.flags else None
        language = np.empty((rows, length), dtype=np.int64) if self.languages else None
        out = (tokens, doc_start, flags, language)
        begin = segments * length
        first = np.searchsorted(self._starts, begin, side="right") - 1  # the shard holding a row's first token
        last = np.searchsorted(self._starts, begin + length - 1, side="right") - 1
        whole = first == last
        for s in np.unique(first[whole]):  # the common case: one gather per shard for all its rows
            here = np.flatnonzero(whole & (first == s))
            self._copy(int(s), here, begin[here] - self._starts[s], length, 0, *out)
        for row in np.flatnonzero(~whole):  # a segment across shard boundaries: piece by piece (rare)
            pos, end = int(begin[row]), int(begin[row]) + length
            for s in range(int(first[row]), int(last[row]) + 1):
                n = min(end, int(self._starts[s + 1])) - pos
                if n:  # empty shards hold nothing
                    self._copy(s, np.array([row]), np.array([pos - int(self._starts[s])]), n, pos - int(begin[row]),
                               *out)
                pos += n
        batch = SegmentBatch.from_flags(np.asarray(indices, dtype=np.int64), tokens, doc_start, flags, language,
                                        segments)
        if not self.parallel:
            batch.side_start = None  # multilingual text: languages, but no pairs
        return batch

    def _copy(self, s: int, rows: np.ndarray, lo: np.ndarray, n: int, at: int, tokens: np.ndarray,
              doc_start: np.ndarray, flags: np.ndarray | None, language: np.ndarray | None) -> None:
        """Shard s's tokens [lo, lo + n) into columns [at, at + n) of `rows`, with their document starts (and
        boundary flags and languages, where the dataset has them)."""
        shard = self._shard(s)
        where = lo[:, None] + np.arange(n)
        tokens[rows, at:at + n] = shard.tokens[where]
        if flags is not None:
            flags[rows, at:at + n] = shard.flags[where]
        if language is not None:
            language[rows, at:at + n] = shard.languages[where]
        offsets = shard.offsets
        bounds = lo.astype(np.uint64)  # offsets are uint64: searching int64 in them would compare as float64
        first, last = np.searchsorted(offsets, bounds), np.searchsorted(offsets, bounds + np.uint64(n))
        counts = last - first
        if counts.any():
            # Document j of row r (first[r] <= j < last[r]) begins at column offsets[j] - lo[r] + at.
            row_of = np.repeat(np.arange(len(rows)), counts)
            doc = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + first[row_of]
            doc_start[rows[row_of], offsets[doc].astype(np.int64) - lo[row_of] + at] = True
