"""The streaming safetensors writer: tensors and file byte ranges (`FileSlice`, copied through a small buffer)
give the very file `safetensors` itself writes."""

import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from pretrain.hf import writer
from pretrain.hf.writer import FileSlice, write_safetensors


@pytest.fixture
def source(tmp_path):
    """A file holding two fp32 tensors' bytes after a 24-byte preamble, as a checkpoint holds its partitions."""
    torch.manual_seed(0)
    a, b = torch.randn(6, 5), torch.randn(7)
    path = tmp_path / "source.bin"
    path.write_bytes(b"x" * 24 + a.numpy().tobytes() + b.numpy().tobytes())
    return path, a, b


def write_from_slices(directory, path, a, b, split_a=True):
    pieces = {"a": [FileSlice(path, 24, 40), FileSlice(path, 64, 80)] if split_a else [FileSlice(path, 24, 120)],
              "b": [b[:3], FileSlice(path, 24 + 120 + 12, 16)]}  # a tensor piece, then the rest from the file
    entries = [("a", a.shape), ("b", b.shape)]
    return write_safetensors(directory, entries, lambda i: pieces[entries[i][0]])


def test_file_slices_and_tensors_give_the_file_safetensors_writes(source, tmp_path):
    path, a, b = source
    (ours := tmp_path / "ours").mkdir()
    [written] = write_from_slices(ours, path, a, b)
    save_file({"a": a, "b": b}, str(tmp_path / "reference.safetensors"), metadata={"format": "pt"})
    loaded = load_file(written)
    assert torch.equal(loaded["a"], a) and torch.equal(loaded["b"], b)
    assert written.read_bytes() == (tmp_path / "reference.safetensors").read_bytes()


def test_slices_larger_than_the_copy_buffer_go_in_several_reads(source, tmp_path, monkeypatch):
    path, a, b = source
    monkeypatch.setattr(writer, "COPY_BUFFER_BYTES", 12)  # a's slices are 40, 80 and 120 bytes
    [written] = write_from_slices(tmp_path, path, a, b, split_a=False)
    loaded = load_file(written)
    assert torch.equal(loaded["a"], a) and torch.equal(loaded["b"], b)


def test_a_truncated_source_is_an_error_naming_it(source, tmp_path):
    path, a, b = source
    os.truncate(path, 24 + 100)
    with pytest.raises(ValueError, match="source.bin ends before byte 144"):
        write_from_slices(tmp_path, path, a, b)


def test_pieces_of_the_wrong_size_are_refused(source, tmp_path):
    path, a, _ = source
    with pytest.raises(ValueError, match="a: got 116 bytes"):
        write_safetensors(tmp_path, [("a", a.shape)], lambda i: [FileSlice(path, 24, 116)])
