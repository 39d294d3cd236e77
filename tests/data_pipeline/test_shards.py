"""Shard files and the manifest: byte layout, round trips, and the errors for damaged datasets."""

import hashlib
import json
from dataclasses import asdict

import numpy as np
import pytest

from data_pipeline.errors import UserError
from data_pipeline.dataset_files import file_sha256
from data_pipeline.shards import MANIFEST, Manifest, ShardInfo, open_shard, token_dtype, write_shard


def random_docs(rng, n_docs, high, max_len=9):
    return [rng.integers(0, high, size=int(rng.integers(1, max_len + 1))) for _ in range(n_docs)]


def make_manifest(shards, dtype="<u2", vocab_size=1000):
    return Manifest(vocab_size=vocab_size, dtype=dtype, tokenizer_sha256="ab" * 32,
                    special_tokens={"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}, shards=shards)


def test_token_dtype_boundary():
    assert token_dtype(1000) == np.dtype("<u2")
    assert token_dtype(1 << 16) == np.dtype("<u2")  # ids 0..65535 all fit in uint16
    assert token_dtype((1 << 16) + 1) == np.dtype("<u4")
    assert token_dtype(250_000) == np.dtype("<u4")


@pytest.mark.parametrize("vocab_size", [30_000, 1 << 16, 100_000])
@pytest.mark.parametrize("n_docs", [1, 2, 7])
def test_write_open_round_trip(tmp_path, vocab_size, n_docs):
    dtype = token_dtype(vocab_size)
    rng = np.random.default_rng(vocab_size + n_docs)
    docs = random_docs(rng, n_docs, vocab_size)
    docs[0][0] = vocab_size - 1  # the largest id must survive the narrow dtype
    info = write_shard(tmp_path / "s.bin", docs, dtype)

    n_tokens = sum(len(d) for d in docs)
    assert info.path == "s.bin"
    assert (info.tokens, info.documents) == (n_tokens, n_docs)
    data = (tmp_path / "s.bin").read_bytes()
    assert info.bytes == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest() == file_sha256(tmp_path / "s.bin")
    # Layout: tokens, zero padding to 8 bytes, then documents + 1 uint64 offsets.
    token_bytes = n_tokens * dtype.itemsize
    padded = -(-token_bytes // 8) * 8
    assert len(data) == padded + 8 * (n_docs + 1)
    assert data[token_bytes:padded] == b"\0" * (padded - token_bytes)

    shard = open_shard(tmp_path, info, dtype, verify=True)
    assert shard.tokens.dtype == dtype
    np.testing.assert_array_equal(shard.tokens, np.concatenate(docs))
    expected_offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    np.testing.assert_array_equal(shard.offsets, expected_offsets)
    for i, doc in enumerate(docs):
        np.testing.assert_array_equal(shard.tokens[shard.offsets[i]:shard.offsets[i + 1]], doc)


@pytest.mark.parametrize("dtype", ["<u2", "<u4"])
@pytest.mark.parametrize("n_tokens", [1, 3, 4, 5, 8])
def test_padding_for_every_token_count(tmp_path, dtype, n_tokens):
    """Odd token counts leave the offsets 8-byte aligned after zero padding, and still read back."""
    dtype = np.dtype(dtype)
    docs = [np.arange(10, 10 + n_tokens)]
    if n_tokens > 2:  # two documents, to see an inner offset
        docs = [np.arange(10, 12), np.arange(12, 10 + n_tokens)]
    info = write_shard(tmp_path / "s.bin", docs, dtype)
    assert (info.bytes - 8 * (len(docs) + 1)) % 8 == 0
    shard = open_shard(tmp_path, info, dtype)
    np.testing.assert_array_equal(shard.tokens, np.arange(10, 10 + n_tokens))
    assert list(shard.offsets) == [0] + list(np.cumsum([len(d) for d in docs]))


def test_shard_is_little_endian_on_disk(tmp_path):
    info = write_shard(tmp_path / "s.bin", [np.array([0x0102, 0x0304])], np.dtype("<u2"))
    data = (tmp_path / "s.bin").read_bytes()
    assert data[:4] == bytes([0x02, 0x01, 0x04, 0x03])
    assert data[8:] == (0).to_bytes(8, "little") + (2).to_bytes(8, "little")
    assert info.bytes == 24


def test_open_shard_is_read_only(tmp_path):
    info = write_shard(tmp_path / "s.bin", [np.array([5, 6, 7])], np.dtype("<u2"))
    shard = open_shard(tmp_path, info, np.dtype("<u2"))
    with pytest.raises(ValueError):
        shard.tokens[0] = 1


def test_manifest_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    shards = [write_shard(tmp_path / f"shard_{i:05d}.bin", random_docs(rng, 3 + i, 1000), np.dtype("<u2"))
              for i in range(3)]
    manifest = make_manifest(shards)
    manifest.save(tmp_path)
    assert not (tmp_path / (MANIFEST + ".tmp")).exists()
    loaded = Manifest.load(tmp_path)
    assert loaded == manifest
    assert all(isinstance(s, ShardInfo) for s in loaded.shards)
    assert loaded.total_tokens == sum(s.tokens for s in shards) > 0
    assert loaded.total_documents == 3 + 4 + 5
    # The file is plain JSON that other tools can read.
    assert json.loads((tmp_path / MANIFEST).read_text()) == asdict(manifest)
    # str roots work too.
    assert Manifest.load(str(tmp_path)) == manifest


def test_missing_manifest(tmp_path):
    with pytest.raises(UserError, match="manifest.json") as exc:
        Manifest.load(tmp_path)
    assert str(tmp_path / MANIFEST) in str(exc.value)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "null", '{"vocab_size": 5}',
                                  '{"vocab_size": 5, "dtype": "<u2", "tokenizer_sha256": "x", '
                                  '"special_tokens": {}, "shards": [{"path": "a.bin"}]}'])
def test_malformed_manifest(tmp_path, text):
    (tmp_path / MANIFEST).write_text(text)
    with pytest.raises(UserError, match="not a valid Graft manifest") as exc:
        Manifest.load(tmp_path)
    assert str(tmp_path / MANIFEST) in str(exc.value)


def test_wrong_format_version(tmp_path):
    manifest = make_manifest([])
    manifest.format_version = 99
    manifest.save(tmp_path)
    with pytest.raises(UserError, match="format version 99") as exc:
        Manifest.load(tmp_path)
    assert str(tmp_path / MANIFEST) in str(exc.value)


@pytest.mark.parametrize("bad_path", ["../x.bin", "sub/../../x.bin", "/etc/passwd", "ABSOLUTE"])
def test_shard_path_escaping_root(tmp_path, bad_path):
    root = tmp_path / "data"
    root.mkdir()
    if bad_path == "ABSOLUTE":
        bad_path = str(tmp_path / "x.bin")
    good = write_shard(root / "ok.bin", [np.array([1, 2])], np.dtype("<u2"))
    bad = ShardInfo(path=bad_path, tokens=2, documents=1, bytes=good.bytes, sha256=good.sha256)
    make_manifest([good, bad]).save(root)
    with pytest.raises(UserError, match="escapes the dataset root") as exc:
        Manifest.load(root)
    assert str(root / MANIFEST) in str(exc.value)
    assert repr(bad_path) in str(exc.value)


def test_missing_shard_file(tmp_path):
    info = write_shard(tmp_path / "s.bin", [np.array([1, 2, 3])], np.dtype("<u2"))
    (tmp_path / "s.bin").unlink()
    with pytest.raises(UserError, match="missing") as exc:
        open_shard(tmp_path, info, np.dtype("<u2"))
    assert str(tmp_path / "s.bin") in str(exc.value)


def test_truncated_shard(tmp_path):
    info = write_shard(tmp_path / "s.bin", [np.array([1, 2, 3]), np.array([4])], np.dtype("<u2"))
    data = (tmp_path / "s.bin").read_bytes()
    (tmp_path / "s.bin").write_bytes(data[:-8])
    for verify in (False, True):
        with pytest.raises(UserError, match=f"has {len(data) - 8} bytes, the manifest says {len(data)}") as exc:
            open_shard(tmp_path, info, np.dtype("<u2"), verify=verify)
        assert str(tmp_path / "s.bin") in str(exc.value)


def test_corrupted_byte_caught_by_verify(tmp_path):
    info = write_shard(tmp_path / "s.bin", [np.array([1, 2, 3]), np.array([4])], np.dtype("<u2"))
    data = bytearray((tmp_path / "s.bin").read_bytes())
    data[2] ^= 0xFF  # same size: only the checksum can tell
    (tmp_path / "s.bin").write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256") as exc:
        open_shard(tmp_path, info, np.dtype("<u2"), verify=True)
    assert str(tmp_path / "s.bin") in str(exc.value)
    # Without verify the file is opened as is (the loader verifies once per file version: test_loader.py).
    assert open_shard(tmp_path, info, np.dtype("<u2")).tokens[1] == 2 ^ 0xFF
