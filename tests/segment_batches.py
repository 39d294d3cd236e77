"""Reading rows of a prepared dataset as the loader hands them to collators, for the collator tests."""

import numpy as np

from data_pipeline.loader import partner_segments
from data_pipeline.packing import PackedSegments, SegmentBatch


def read(root, length, rows=16, first=0, partner=False):
    segments = PackedSegments(root, length, cache_dir=str(root / "cache"))
    picked = (np.arange(first, first + rows) * 7) % len(segments)
    batch = segments.read_batch(picked, np.arange(first, first + rows))
    if partner:
        batch.partner = segments.read_batch(partner_segments(0, batch.indices, picked, len(segments)), batch.indices)
    return segments.manifest, batch


def rows_of(batch: SegmentBatch, keep: np.ndarray) -> SegmentBatch:
    """The batch of rows `keep` of `batch` (partner rows with them)."""
    pick = {k: (None if v is None else v[keep]) for k, v in vars(batch).items() if k != "partner"}
    out = SegmentBatch(**pick)
    if batch.partner is not None:
        out.partner = rows_of(batch.partner, keep)
    return out
