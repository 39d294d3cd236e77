"""seeded_rngs builds, for a batch of sample indices at once, exactly the generators seeded_rng builds one by one."""

import numpy as np
import pytest

from data_pipeline.loader import seeded_rng
from data_pipeline.seed_sequence import seeded_rng_groups, seeded_rngs


def states(generators):
    return [g.bit_generator.state for g in generators]


@pytest.mark.parametrize("seed", [0, 1, 3 ^ 0x7A1, 2**31 + 5, 2**32 - 1])
def test_the_batch_generators_are_seeded_rngs(seed):
    indices = np.concatenate([np.arange(40), np.random.default_rng(seed).integers(0, 2**32, 200), [2**32 - 1]])
    made = seeded_rngs(seed, indices)
    assert states(made) == states(seeded_rng(seed, int(i)) for i in indices)
    assert made[3].random() == seeded_rng(seed, 3).random()


def test_larger_words_and_groups_of_seeds():
    indices = np.array([5, 2**32, 2**40 + 3])  # SeedSequence takes more than one word for these
    assert states(seeded_rngs(7, indices)) == states(seeded_rng(7, int(i)) for i in indices)
    groups = seeded_rng_groups([7, 7 ^ 0x5B], np.arange(6))
    assert [states(g) for g in groups] == [states(seeded_rng(s, i) for i in range(6)) for s in (7, 7 ^ 0x5B)]
    assert seeded_rngs(7, np.array([], dtype=np.int64)) == []
