"""The O(1) seeded permutation behind the global sample order."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from data_pipeline.permutation import Permutation, sample_order


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3000), seed=st.integers(0, 2 ** 32), epoch=st.integers(0, 50))
def test_is_a_bijection_of_the_range(n, seed, epoch):
    order = sample_order(seed, epoch, n)
    assert order.dtype == np.int64
    assert sorted(order.tolist()) == list(range(n))


def test_lookup_by_index_equals_the_whole_order():
    n = 777
    perm, order = Permutation(n, 5, 2), sample_order(5, 2, n)
    assert [perm[i] for i in range(n)] == order.tolist()
    idx = np.array([776, 0, 400, 400, 3])
    np.testing.assert_array_equal(perm.map(idx), order[idx])


def test_seed_and_epoch_give_different_orders():
    orders = {(s, e): tuple(sample_order(s, e, 64).tolist()) for s in (0, 1, 2) for e in (0, 1, 2)}
    assert len(set(orders.values())) == len(orders)
    assert tuple(sample_order(1, 2, 64).tolist()) == orders[(1, 2)]  # a pure function of (seed, epoch)


def test_shuffles_well():
    """Not the identity nor a shift: neighbours land far apart, and positions are spread evenly."""
    n = 10_000
    order = sample_order(0, 0, n)
    assert np.mean(order == np.arange(n)) < 0.01
    assert np.median(np.abs(np.diff(order))) > n / 10
    counts, _ = np.histogram(order[: n // 10], bins=10, range=(0, n))  # the first tenth hits every tenth
    assert counts.min() > 50


def test_huge_domain_without_materializing():
    n = 10 ** 12
    perm = Permutation(n, 9, 0)
    idx = np.arange(10 ** 8, 10 ** 8 + 5000)
    out = perm.map(idx)
    assert len(set(out.tolist())) == len(out) and out.min() >= 0 and out.max() < n
    assert perm[10 ** 8 + 17] == out[17]
