"""Where a memory-mapped checkpoint tensor lies in its file: what lets export copy its bytes from the file."""

import torch

from pretrain.zero_checkpoint import _file_offsets


def test_offsets_of_mapped_tensors_point_at_their_bytes(tmp_path):
    path = tmp_path / "optim_states.pt"
    torch.manual_seed(0)
    torch.save({"flat": [torch.randn(1000), torch.randn(37)], "half": torch.randn(8).half()}, path)
    loaded = torch.load(path, mmap=True, weights_only=True)
    flats = [*loaded["flat"], loaded["half"], torch.randn(5)]
    offsets = _file_offsets(path, flats)
    data = path.read_bytes()
    for flat, offset in zip(flats[:2], offsets[:2], strict=True):
        assert data[offset:offset + flat.numel() * 4] == flat.numpy().tobytes()
    # Not fp32 (the writer copies fp32 bytes as they are), or not in the file at all: views instead.
    assert offsets[2:] == [None, None]
