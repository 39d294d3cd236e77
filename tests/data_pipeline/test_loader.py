"""PackedSegments (fixed-length views over the shards) and the Loader's global sample order and resume.

The loader datasets hold token t at global position t (uint32 shards), so a sample's first token tells
which segment it is: segment s starts with token s * length.
"""

import itertools
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_pipeline.errors import UserError
from data_pipeline.loader import DataConfig, GlobalOrder, Loader, sample_order
from data_pipeline.packing import PackedSegments
from data_pipeline.prepare import prepare
from data_pipeline.shards import Manifest, write_shard
from data_pipeline.tokenizer import load_tokenizer

SPECIALS = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
HYPOTHESIS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def build_dataset(root: Path, docs: list[np.ndarray], shard_sizes: list[int], dtype: str) -> Path:
    """Write `docs` into shards of `shard_sizes` documents each (0 = an empty shard), plus the manifest."""
    root.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(vocab_size=1 << 20 if dtype == "<u4" else 1000, dtype=dtype, tokenizer_sha256="0" * 64,
                        special_tokens=SPECIALS)
    it = iter(docs)
    for i, size in enumerate(shard_sizes):
        chunk = list(itertools.islice(it, size))
        manifest.shards.append(write_shard(root / f"shard_{i:05d}.bin", chunk, np.dtype(dtype)))
    assert next(it, None) is None
    manifest.save(root)
    return root


def positional_docs(lengths: list[int]) -> list[np.ndarray]:
    """Documents whose tokens are their global positions."""
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def split_sizes(n_docs: int, draw_sizes: list[int]) -> list[int]:
    sizes, left = [], n_docs
    for s in draw_sizes:
        if left == 0:
            break
        s = min(s, left)
        sizes.append(s)
        left -= s
    if left:
        sizes.append(left)
    return sizes


# ---- PackedSegments -------------------------------------------------------------------------------------------

def check_segments(root: Path, docs: list[np.ndarray], length: int):
    segments = PackedSegments(root, length, cache_dir=stamps_dir(root))
    flat = np.concatenate(docs)
    assert len(segments) == len(flat) // length
    doc_starts = np.concatenate([[0], np.cumsum([len(d) for d in docs])[:-1]])
    pieces = []
    for i in range(len(segments)):
        tokens, starts = segments.read(i)
        assert tokens.dtype == np.int64 and len(tokens) == length
        expected_starts = doc_starts[(doc_starts >= i * length) & (doc_starts < (i + 1) * length)] - i * length
        np.testing.assert_array_equal(starts, expected_starts)
        pieces.append(tokens)
    np.testing.assert_array_equal(np.concatenate(pieces), flat[:len(segments) * length])
    # Reading out of order, or again, gives the same answer (no state carried between reads).
    for i in reversed(range(len(segments))):
        np.testing.assert_array_equal(segments.read(i)[0], pieces[i])
    # A whole batch in one read (the loader's way), in shuffled order with repeats, equals the one-by-one reads.
    chosen = np.random.default_rng(length).integers(0, len(segments), size=2 * len(segments) + 1)
    batch = segments.read_batch(chosen, np.arange(len(chosen)) + 100)
    assert batch.tokens.dtype == np.int64 and batch.tokens.shape == batch.doc_start.shape == (len(chosen), length)
    assert batch.indices.tolist() == list(range(100, 100 + len(chosen)))
    for row, i in enumerate(chosen):
        np.testing.assert_array_equal(batch.tokens[row], pieces[i])
        expected_starts = doc_starts[(doc_starts >= i * length) & (doc_starts < (i + 1) * length)] - i * length
        np.testing.assert_array_equal(np.flatnonzero(batch.doc_start[row]), expected_starts)


@HYPOTHESIS
@given(lengths=st.lists(st.integers(1, 12), min_size=1, max_size=30),
       shard_docs=st.lists(st.integers(0, 4), min_size=1, max_size=30),
       length=st.integers(1, 20), dtype=st.sampled_from(["<u2", "<u4"]), seed=st.integers(0, 2 ** 16))
def test_segments_are_the_concatenated_shards(tmp_path_factory, lengths, shard_docs, length, dtype, seed):
    if sum(lengths) < length:
        lengths = lengths + [length]
    rng = np.random.default_rng(seed)
    high = 1000 if dtype == "<u2" else 1 << 20
    docs = [rng.integers(0, high, size=n) for n in lengths]
    # Empty shards (size 0) are allowed in the middle: they hold no tokens and must be skipped.
    root = build_dataset(tmp_path_factory.mktemp("ds"), docs, split_sizes(len(docs), shard_docs), dtype)
    check_segments(root, docs, length)


def test_segment_spanning_many_tiny_shards(tmp_path):
    docs = positional_docs([2, 1, 3, 1, 1, 4, 2, 5, 1, 1, 3])
    root = build_dataset(tmp_path / "ds", docs, [1] * len(docs), "<u4")  # one document per shard
    check_segments(root, docs, 7)
    tokens, starts = PackedSegments(root, 7).read(1)  # tokens 7..13: docs start at 7, 8, 12
    assert tokens.tolist() == list(range(7, 14))
    assert starts.tolist() == [0, 1, 5]


def test_segments_of_a_prepared_dataset(tmp_path):
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 15))) for _ in range(60)]
    path = tmp_path / "in.txt"
    path.write_text("\n\n".join(texts))
    prepare([path], tmp_path / "ds", vocab_size=100, shard_tokens=25)
    tok = load_tokenizer(tmp_path / "ds")
    docs = [np.array(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]
    assert len(Manifest.load(tmp_path / "ds").shards) > 5
    check_segments(tmp_path / "ds", docs, 13)


def test_too_few_tokens_for_one_sample(tmp_path):
    root = build_dataset(tmp_path / "ds", positional_docs([3, 4]), [2], "<u4")
    assert len(PackedSegments(root, 7)) == 1
    with pytest.raises(UserError, match="fewer than one sample") as exc:
        PackedSegments(root, 8)
    assert str(root) in str(exc.value)


# ---- Loader -----------------------------------------------------------------------------------------------------

def collate(batch):  # module level: picklable for worker processes
    return {"index": torch.from_numpy(batch.indices), "tokens": torch.from_numpy(batch.tokens)}


def loader_dataset(root: Path, n_segments: int, length: int, tail: int, doc_len: int = 5) -> Path:
    total = n_segments * length + tail
    lengths = [doc_len] * (total // doc_len) + ([total % doc_len] if total % doc_len else [])
    return build_dataset(root, positional_docs(lengths), split_sizes(len(lengths), [3] * len(lengths)), "<u4")


def stamps_dir(root: Path) -> str:
    """Beside the test's dataset, so the checksum stamps of many small datasets do not pile up in ~/.cache."""
    return str(Path(root).parent / "graft-cache")


def make_loader(root, length, seed, rank, world, micro_batch, workers=0, cache=None):
    cfg = DataConfig(path=str(root), seq_len=max(8, length + 2), num_workers=workers, prefetch_factor=2,
                     cache_dir=str(cache or stamps_dir(root)))
    return Loader(cfg, length, collate, seed=seed, rank=rank, world=world, micro_batch=micro_batch)


def take(loader, k):
    it = iter(loader)
    batches = list(itertools.islice(it, k))
    it.close()
    return batches


def expected_segment(seed, g, n):
    return int(sample_order(seed, g // n, n)[g % n])


def check_batch(batch, first_index, micro_batch, seed, n, length):
    """The batch holds global samples first_index.. in order, each the segment the seeded order names."""
    indices = batch["index"].tolist()
    assert indices == list(range(first_index, first_index + micro_batch))
    for row, g in enumerate(indices):
        seg = expected_segment(seed, g, n)
        assert batch["tokens"][row].tolist() == list(range(seg * length, (seg + 1) * length))


def test_sample_order_is_a_seeded_permutation_per_epoch():
    n = 50
    orders = {(s, e): sample_order(s, e, n) for s in (0, 1) for e in (0, 1, 2)}
    for order in orders.values():
        assert sorted(order.tolist()) == list(range(n))
    assert len({tuple(o.tolist()) for o in orders.values()}) == len(orders)  # seed and epoch both matter
    np.testing.assert_array_equal(sample_order(0, 1, n), orders[(0, 1)])


@HYPOTHESIS
@given(n=st.integers(1, 12), length=st.sampled_from([4, 7]), tail=st.integers(0, 3), world=st.integers(1, 4),
       micro_batch=st.integers(1, 3), extra_steps=st.integers(0, 3), seed=st.integers(0, 1000))
def test_ranks_read_the_global_order_without_overlap(tmp_path_factory, n, length, tail, world, micro_batch,
                                                    extra_steps, seed):
    root = loader_dataset(tmp_path_factory.mktemp("ds"), n, length, tail)
    per_group = world * micro_batch
    steps = math.ceil((n + 1) / per_group) + extra_steps  # always crosses into the second epoch
    seen = []
    for rank in range(world):
        loader = make_loader(root, length, seed, rank, world, micro_batch)
        assert len(loader.segments) == n
        batches = take(loader, steps)
        assert loader.state_dict() == {"consumed_samples": steps * per_group, "seed": seed}
        for step, batch in enumerate(batches):
            check_batch(batch, (step * world + rank) * micro_batch, micro_batch, seed, n, length)
            seen += batch["index"].tolist()
    assert sorted(seen) == list(range(steps * per_group))  # the exact prefix, no duplicates
    # Every full epoch visits each segment once.
    for epoch in range(steps * per_group // n):
        segs = [expected_segment(seed, g, n) for g in range(epoch * n, (epoch + 1) * n)]
        assert sorted(segs) == list(range(n))


@HYPOTHESIS
@given(n=st.integers(1, 10), world=st.integers(1, 4), micro_batch=st.integers(1, 3), steps=st.integers(1, 8),
       data=st.data())
def test_resume_matches_uninterrupted_run(tmp_path_factory, n, world, micro_batch, steps, data):
    length, seed = 5, 17
    root = loader_dataset(tmp_path_factory.mktemp("ds"), n, length, 2)
    stop = data.draw(st.integers(0, steps), label="stop")
    for rank in range(world):
        full = take(make_loader(root, length, seed, rank, world, micro_batch), steps)
        first = make_loader(root, length, seed, rank, world, micro_batch)
        head = take(first, stop)
        state = first.state_dict()
        assert state["consumed_samples"] == stop * world * micro_batch
        resumed = make_loader(root, length, seed, rank, world, micro_batch)
        resumed.load_state_dict(state)
        tail = take(resumed, steps - stop)
        assert len(head + tail) == steps
        for a, b in zip(full, head + tail, strict=True):
            assert torch.equal(a["index"], b["index"]) and torch.equal(a["tokens"], b["tokens"])
        assert resumed.state_dict() == {"consumed_samples": steps * world * micro_batch, "seed": seed}


@pytest.mark.parametrize("old_world,old_micro,new_world,new_micro",
                         [(2, 3, 1, 6), (1, 6, 3, 2), (2, 2, 4, 1), (2, 2, 1, 2), (1, 2, 3, 2), (3, 1, 2, 5)])
def test_resume_at_another_world_size(tmp_path, old_world, old_micro, new_world, new_micro):
    length, seed, n = 4, 3, 11
    root = loader_dataset(tmp_path / "ds", n, length, 1)
    stop = 3  # 9 to 18 samples: some runs cross the first epoch of 11
    old_states = []
    seen = []
    for rank in range(old_world):
        loader = make_loader(root, length, seed, rank, old_world, old_micro)
        seen += [i for b in take(loader, stop) for i in b["index"].tolist()]
        old_states.append(loader.state_dict())
    assert all(s == old_states[0] for s in old_states)
    consumed = old_states[0]["consumed_samples"]
    assert sorted(seen) == list(range(consumed))
    more = 4
    for rank in range(new_world):
        loader = make_loader(root, length, seed, rank, new_world, new_micro)
        loader.load_state_dict(old_states[0])
        for step, batch in enumerate(take(loader, more)):
            check_batch(batch, consumed + (step * new_world + rank) * new_micro, new_micro, seed, n, length)
            seen += batch["index"].tolist()
    assert sorted(seen) == list(range(consumed + more * new_world * new_micro))  # nothing skipped or repeated


@pytest.mark.parametrize("start_groups", [0, 3])
def test_worker_processes_keep_the_order(tmp_path, start_groups):
    length, seed, n, world, micro_batch = 6, 5, 9, 2, 2
    root = loader_dataset(tmp_path / "ds", n, length, 3)
    steps = 7
    for rank in range(world):
        plain = make_loader(root, length, seed, rank, world, micro_batch, workers=0)
        plain.load_state_dict({"consumed_samples": start_groups * world * micro_batch, "seed": seed})
        expected = take(plain, steps)
        workers = make_loader(root, length, seed, rank, world, micro_batch, workers=2)
        workers.load_state_dict({"consumed_samples": start_groups * world * micro_batch, "seed": seed})
        got = take(workers, steps)
        assert [b["index"].tolist() for b in got] == [b["index"].tolist() for b in expected]
        for step, batch in enumerate(got):
            check_batch(batch, ((start_groups + step) * world + rank) * micro_batch, micro_batch, seed, n, length)
        assert workers.state_dict()["consumed_samples"] == (start_groups + steps) * world * micro_batch


def test_worker_rings_wrap_around(tmp_path):
    """Many more batches than a worker's shared-memory ring has slots: each arrives intact and in order, and
    the trainer may hold on to all of them (they are copies, not views of a slot that is reused)."""
    length, seed, n, micro_batch = 4, 9, 40, 3
    root = loader_dataset(tmp_path / "ds", n, length, 0)
    got = take(make_loader(root, length, seed, 0, 1, micro_batch, workers=2), 40)  # 4 slots per worker
    for step, batch in enumerate(got):
        check_batch(batch, step * micro_batch, micro_batch, seed, n, length)


def test_iterating_again_continues(tmp_path):
    root = loader_dataset(tmp_path / "ds", 5, 4, 0)
    loader = make_loader(root, 4, 0, 0, 1, 2)
    first, second = take(loader, 2), take(loader, 2)
    assert [b["index"].tolist() for b in first + second] == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_load_state_dict_rejects_other_seed(tmp_path):
    root = loader_dataset(tmp_path / "ds", 6, 4, 0)
    loader = make_loader(root, 4, seed=1, rank=0, world=2, micro_batch=2)
    with pytest.raises(UserError, match="seed 2"):
        loader.load_state_dict({"consumed_samples": 8, "seed": 2})
    assert loader.state_dict()["consumed_samples"] == 0


@pytest.mark.parametrize("consumed", [2, 6, 9])
def test_resume_at_any_sample_count(tmp_path, consumed):
    """A count that is no multiple of this run's global batch (the old run had another one) resumes exactly."""
    root = loader_dataset(tmp_path / "ds", 6, 4, 0)
    for rank in range(2):
        loader = make_loader(root, 4, seed=1, rank=rank, world=2, micro_batch=2)
        loader.load_state_dict({"consumed_samples": consumed, "seed": 1})
        for step, batch in enumerate(take(loader, 3)):
            check_batch(batch, consumed + (step * 2 + rank) * 2, 2, 1, 6, 4)
        assert loader.state_dict()["consumed_samples"] == consumed + 3 * 4


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 9), old=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(0, 2)),
       new=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(0, 2)), stop=st.integers(0, 4),
       seed=st.integers(0, 99))
def test_resume_with_other_ranks_workers_and_batch(tmp_path_factory, n, old, new, stop, seed):
    """(ranks, micro-batch, workers) change at the resume point: together the ranks read the exact prefix."""
    length = 4
    root = loader_dataset(tmp_path_factory.mktemp("ds"), n, length, 1)
    seen, states = [], []
    world, micro, workers = old
    for rank in range(world):
        loader = make_loader(root, length, seed, rank, world, micro, workers)
        for step, batch in enumerate(take(loader, stop)):
            check_batch(batch, (step * world + rank) * micro, micro, seed, n, length)
            seen += batch["index"].tolist()
        states.append(loader.state_dict())
    assert all(s == states[0] for s in states)
    consumed = states[0]["consumed_samples"]
    world, micro, workers = new
    more = 3
    for rank in range(world):
        loader = make_loader(root, length, seed, rank, world, micro, workers)
        loader.load_state_dict(states[0])
        for step, batch in enumerate(take(loader, more)):
            check_batch(batch, consumed + (step * world + rank) * micro, micro, seed, n, length)
            seen += batch["index"].tolist()
    assert sorted(seen) == list(range(consumed + more * world * micro))  # nothing skipped or repeated


# ---- recurrence lanes ------------------------------------------------------------------------------------------

def make_lane_loader(root, length, seed, rank, world, micro_batch, workers=0):
    cfg = DataConfig(path=str(root), seq_len=max(8, length + 2), num_workers=workers, prefetch_factor=2, lanes=True,
                     cache_dir=stamps_dir(root))
    return Loader(cfg, length, collate, seed=seed, rank=rank, world=world, micro_batch=micro_batch)


def global_lane_rows(root, length, seed, world, micro_batch, steps, workers=0):
    """rows[t] = the global batch at step t (all ranks' rows concatenated in rank order), as token lists."""
    per_rank = [take(make_lane_loader(root, length, seed, r, world, micro_batch, workers), steps)
                for r in range(world)]
    return [[row for r in range(world) for row in per_rank[r][t]["tokens"].tolist()] for t in range(steps)]


@pytest.mark.parametrize("world,micro_batch,workers", [(1, 3, 0), (3, 1, 2), (2, 2, 1)])
def test_lanes_continue_their_token_stream(tmp_path, world, micro_batch, workers):
    length, seed, n = 5, 4, 13
    root = loader_dataset(tmp_path / "ds", n, length, 2)
    lanes = world * micro_batch
    per_lane = n // lanes
    rows = global_lane_rows(root, length, seed, world, micro_batch, steps=2 * per_lane + 1, workers=workers)
    for t in range(len(rows) - 1):
        for j in range(lanes):
            now, nxt = rows[t][j], rows[t + 1][j]
            if (t + 1) % per_lane:  # inside an epoch, the lane continues its stream: token positions run on
                assert nxt[0] == (now[-1] + 1) % (n * length), (t, j)
    # Within one epoch the lanes cover disjoint segments.
    first_epoch = [rows[t][j][0] for t in range(per_lane) for j in range(lanes)]
    assert len(set(first_epoch)) == len(first_epoch)


def test_lanes_resume_at_another_world_size(tmp_path):
    length, seed, n = 4, 2, 17
    root = loader_dataset(tmp_path / "ds", n, length, 0)
    full = global_lane_rows(root, length, seed, world=2, micro_batch=2, steps=6)
    loader = make_lane_loader(root, length, seed, 0, 2, 2)
    take(loader, 2)
    state = loader.state_dict()
    assert state == {"consumed_samples": 8, "seed": seed, "lanes": 4}
    resumed = []
    for rank in range(4):  # 4 ranks x 1 row: the same 4 lanes
        other = make_lane_loader(root, length, seed, rank, 4, 1)
        other.load_state_dict(state)
        resumed.append([b["tokens"].tolist()[0] for b in take(other, 4)])
    assert [[resumed[r][t] for r in range(4)] for t in range(4)] == full[2:]


def test_lanes_state_mismatch(tmp_path):
    root = loader_dataset(tmp_path / "ds", 12, 4, 0)
    lanes = make_lane_loader(root, 4, 0, 0, 2, 2)
    with pytest.raises(UserError, match="recurrence lanes"):
        lanes.load_state_dict({"consumed_samples": 8, "seed": 0, "lanes": 6})
    with pytest.raises(UserError, match="recurrence lanes"):
        lanes.load_state_dict({"consumed_samples": 8, "seed": 0})
    with pytest.raises(UserError, match="at least one segment per lane"):
        make_lane_loader(root, 4, 0, 0, 4, 4)


def test_data_config_validation():
    with pytest.raises(UserError, match="data.seq_len"):
        DataConfig(path="x", seq_len=7)
    with pytest.raises(UserError, match="data.num_workers"):
        DataConfig(path="x", num_workers=-1)
    with pytest.raises(UserError, match="data.cache_bytes"):
        DataConfig(path="x", cache_bytes=0)
    with pytest.raises(UserError, match="data.shuffle_window_shards"):
        DataConfig(path="x", shuffle_window_shards=-1)


# ---- windowed (two-level) shuffle ------------------------------------------------------------------------------

@HYPOTHESIS
@given(n=st.integers(1, 300), block=st.integers(1, 40), window=st.integers(1, 5), seed=st.integers(0, 999),
       epoch=st.integers(0, 3))
def test_windowed_order_is_a_permutation_with_locality(n, block, window, seed, epoch):
    order = GlobalOrder(n, seed, block=block, window=window)
    segs = order.segments(epoch * n, n)
    assert sorted(segs.tolist()) == list(range(n))
    per_window = block * window
    for start in range(0, n, per_window):  # each window draws on at most `window` blocks
        assert len(set((segs[start:start + per_window] // block).tolist())) <= window
    # Index by index (as a resumed run reads) equals the epoch read at once.
    assert [int(order.segments(epoch * n + i, 1)[0]) for i in range(0, n, 7)] == segs[::7].tolist()
    if n >= 40 and n // block >= 4:  # more than one block order is possible: epochs differ
        assert GlobalOrder(n, seed, block=block, window=window).segments((epoch + 1) * n, n).tolist() != \
            segs.tolist()


def test_loader_with_shuffle_window_resumes_at_another_world_size(tmp_path):
    length, seed, n = 4, 6, 30
    root = loader_dataset(tmp_path / "ds", n, length, 2)  # 9 shards of 3 docs x 5 tokens (the last: 2 tokens)
    cfg = lambda: DataConfig(path=str(root), seq_len=8, num_workers=0, shuffle_window_shards=2,  # noqa: E731
                             cache_dir=stamps_dir(root))
    loader = Loader(cfg(), length, collate, seed=seed, rank=0, world=1, micro_batch=4)
    order = loader.order
    assert order.window == 2 and order.block == round(122 / 9 / length)  # segments per shard, on average
    first = take(loader, 5)
    state = loader.state_dict()
    seen = [i for b in first for i in b["index"].tolist()]
    for rank in range(3):
        other = Loader(cfg(), length, collate, seed=seed, rank=rank, world=3, micro_batch=2)
        other.load_state_dict(state)
        for step, batch in enumerate(take(other, 6)):
            first_index = 20 + (step * 3 + rank) * 2
            assert batch["index"].tolist() == list(range(first_index, first_index + 2))
            for row, g in enumerate(batch["index"].tolist()):
                seg = int(order.segments(g, 1)[0])
                assert batch["tokens"][row].tolist() == list(range(seg * length, (seg + 1) * length))
            seen += batch["index"].tolist()
    assert sorted(seen) == list(range(20 + 36))
    segs = order.segments(0, n)
    assert sorted(segs.tolist()) == list(range(n))


# ---- local shards are verified against the manifest -----------------------------------------------------------

def test_corrupt_or_truncated_local_shard_is_named(tmp_path):
    root = loader_dataset(tmp_path / "ds", 6, 4, 0)
    shard = root / Manifest.load(root).shards[1].path
    data = bytearray(shard.read_bytes())
    data[0] ^= 0xFF  # same size: only the checksum tells
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256") as exc:
        take(make_loader(root, 4, 0, 0, 1, 6, cache=tmp_path / "cache"), 1)  # one batch reads every segment
    assert str(shard) in str(exc.value)
    shard.write_bytes(bytes(data[:-8]))
    with pytest.raises(UserError, match="truncated") as exc:
        take(make_loader(root, 4, 0, 0, 1, 6, cache=tmp_path / "cache"), 1)
    assert str(shard) in str(exc.value)


def test_local_checksum_is_paid_once_per_file_version(tmp_path):
    root = loader_dataset(tmp_path / "ds", 6, 4, 0)
    shards = Manifest.load(root).shards
    cache = tmp_path / "cache"
    take(make_loader(root, 4, 0, 0, 1, 6, cache=cache), 1)
    assert len(list((cache / "verified").iterdir())) == len(shards)  # one stamp per verified shard
    # Corrupted in place with size, inode and mtime kept: the stamp vouches for it, no second hashing.
    shard = root / shards[0].path
    st = shard.stat()
    with open(shard, "r+b") as f:
        f.write(b"\xff")
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    take(make_loader(root, 4, 0, 0, 1, 6, cache=cache), 1)
    # Any rewrite that changes the mtime is checked again.
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    with pytest.raises(UserError, match="sha256"):
        take(make_loader(root, 4, 0, 0, 1, 6, cache=cache), 1)
