"""The streaming ZeRO-3 reader on a checkpoint laid out as DeepSpeed writes it (2 ranks, written here with
torch.save so the test needs no training): every tensor comes back exactly, as byte ranges of the files or
as mapped views, and reading by byte ranges never reopens the memory maps."""

import math

import pytest
import torch

from pretrain import zero_checkpoint
from pretrain.hf.writer import FileSlice
from pretrain.zero_checkpoint import ZeroCheckpoint

WORLD = 2


@pytest.fixture(scope="module")
def stage3(tmp_path_factory):
    """(engine dir, the full tensors) of a ZeRO-3 checkpoint of 2 ranks, two optimizer groups."""
    engine = tmp_path_factory.mktemp("ckpt") / "engine"
    engine.mkdir()
    torch.manual_seed(0)
    groups = [{"embed.weight": (7, 5), "layer.bias": (3,)}, {"layer.weight": (4, 5), "norm.weight": (5,)}]
    full = {name: torch.randn(shape) for group in groups for name, shape in group.items()}
    shares = [[] for _ in range(WORLD)]  # rank r's share of each parameter in turn, the last one zero-padded
    for tensor in full.values():
        share = math.ceil(tensor.numel() / WORLD)
        padded = torch.cat([tensor.reshape(-1), torch.zeros(share * WORLD - tensor.numel())])
        for r in range(WORLD):
            shares[r].append(padded[r * share:(r + 1) * share])
    for r in range(WORLD):
        flat = torch.cat(shares[r])
        flats = [flat[:7], flat[7:]]  # the concatenation counts, not where one group ends
        torch.save({"module": {}, "buffer_names": [], "param_shapes": [{k: torch.Size(v) for k, v in g.items()}
                                                                       for g in groups], "shared_params": {}},
                   engine / f"zero_pp_rank_{r}_mp_rank_00_model_states.pt")
        torch.save({"optimizer_state_dict": {"zero_stage": 3, "partition_count": WORLD,
                                             "fp32_flat_groups": [f.clone() for f in flats]}},
                   engine / f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt")
    return engine, full


def assemble(pieces) -> torch.Tensor:
    parts = []
    for piece in pieces:
        if isinstance(piece, FileSlice):
            with open(piece.path, "rb") as f:
                f.seek(piece.offset)
                parts.append(torch.frombuffer(bytearray(f.read(piece.nbytes)), dtype=torch.float32))
        else:
            parts.append(piece.clone())
    return torch.cat(parts)


def test_every_tensor_comes_back_exactly_and_byte_ranges_open_the_maps_once(stage3, monkeypatch):
    engine, full = stage3
    monkeypatch.setattr(zero_checkpoint, "WINDOW_BYTES", 8)  # smaller than any tensor
    opened = []
    original = ZeroCheckpoint._open
    monkeypatch.setattr(ZeroCheckpoint, "_open", lambda self: (opened.append(1), original(self)))
    reader = ZeroCheckpoint(engine)
    assert (reader.stage, reader.world) == (3, WORLD)
    for name, tensor in full.items():
        pieces = reader.pieces(name)
        assert all(isinstance(p, FileSlice) for p in pieces)  # fp32 data in the files: nothing mapped is read
        assert torch.equal(assemble(pieces).view(tensor.shape), tensor)
    assert len(opened) == 1
    for name, tensor in full.items():  # through the maps: reopened past the window, so after every tensor
        assert torch.equal(reader.tensor(name), tensor)
    assert len(opened) == 1 + len(full) - 1
