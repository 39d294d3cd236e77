"""A seeded permutation of [0, n) evaluated one index at a time in O(1): no array of n is ever built.

A balanced Feistel network is a bijection on [0, 4^h) for any round function; cycle-walking (apply it
again while the result is >= n) restricts it to a bijection on [0, n). With 4^h < 4n the expected number
of walks is below 4. The round keys come from (seed, epoch) only, so the order is the same on every rank,
in every DataLoader worker, and after any resume.
"""

from __future__ import annotations

import numpy as np

ROUNDS = 6
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a cheap, well-spread hash of uint64 values."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


class Permutation:
    """`perm[i]` (or `perm.map(indices)`, vectorized) is the position-i element of a seeded shuffle of [0, n)."""

    def __init__(self, n: int, seed: int, epoch: int, salt: tuple[int, ...] = ()):
        """`salt` tells apart several permutations drawn for the same (seed, epoch)."""
        assert n > 0
        self.n = n
        self.half_bits = max(1, (int(n - 1).bit_length() + 1) // 2)
        self.mask = np.uint64((1 << self.half_bits) - 1)
        self.keys = np.random.SeedSequence([seed, epoch, 0x5EED, *salt]).generate_state(ROUNDS, np.uint64)

    def _feistel(self, x: np.ndarray) -> np.ndarray:
        bits = np.uint64(self.half_bits)
        left, right = x >> bits, x & self.mask
        with np.errstate(over="ignore"):  # uint64 multiplication wraps on purpose
            for key in self.keys:
                left, right = right, left ^ (mix64(right ^ key) & self.mask)
        return (left << bits) | right

    def map(self, indices) -> np.ndarray:
        x = np.asarray(indices, dtype=np.uint64)
        assert x.size == 0 or int(x.max()) < self.n
        x = self._feistel(x)
        walking = x >= self.n
        while walking.any():
            x[walking] = self._feistel(x[walking])
            walking = x >= self.n
        return x.astype(np.int64)

    def __getitem__(self, i: int) -> int:
        return int(self.map(np.array([i]))[0])


def sample_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The whole permutation for one epoch, for tests and tools; the loader looks indices up one by one."""
    return Permutation(n, seed, epoch).map(np.arange(n))
