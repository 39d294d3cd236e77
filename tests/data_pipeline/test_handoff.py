"""The shared-memory hand-off of batches from DataLoader workers (data_pipeline/handoff.py)."""

import torch

from data_pipeline.handoff import RingReceiver, WorkerRing


def batch(step):
    return {"input_ids": torch.arange(12).view(3, 4) + step, "labels": torch.full((3, 4), -step),
            "flag": torch.tensor([step], dtype=torch.int8)}


def test_batches_cross_through_slots_and_arrive_as_copies():
    ring, receiver = WorkerRing(worker=1, slots=3), RingReceiver()
    received = []
    for step in range(10):  # wraps the ring three times
        message = ring.pack(batch(step))
        assert set(message) == {"ring_worker", "ring_slot", "ring"} and message["ring_slot"] == step % 3
        assert (message["ring"] is None) == (step > 0)  # the buffer itself travels once
        received.append(receiver.unpack(message))
    for step, got in enumerate(received):  # held batches were not overwritten by later ones in their slot
        want = batch(step)
        assert got.keys() == want.keys()
        for key in want:
            assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key])


def test_other_shapes_and_non_tensor_batches_go_the_ordinary_way():
    ring, receiver = WorkerRing(worker=0, slots=2), RingReceiver()
    receiver.unpack(ring.pack(batch(0)))
    smaller = {"input_ids": torch.zeros(2, 4, dtype=torch.int64)}
    assert ring.pack(smaller) is smaller and receiver.unpack(smaller) is smaller
    odd = {"input_ids": torch.zeros(3, 4, dtype=torch.int64), "note": "text"}
    assert ring.pack(odd) is odd
