"""`seeded_rng(seed, i)` for a whole batch of sample indices at once, bit for bit the same generators.

`np.random.default_rng([seed, i])` spends most of its ~20 us in SeedSequence's hashing of the two words, done
in scalar code; collators build one per row (some several), which came to a large share of their time. The
hashing is fixed arithmetic on uint32 words (numpy's SeedSequence: mix_entropy, then generate_state), so it is
done here for every row in a few numpy operations, and each PCG64 is seeded with its row's state words.
"""

from __future__ import annotations

import numpy as np
from numpy.random.bit_generator import ISeedSequence

# numpy.random.bit_generator's SeedSequence constants (pool of 4 uint32 words).
POOL = 4
INIT_A, MULT_A, INIT_B, MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
MIX_MULT_L, MIX_MULT_R, XSHIFT = 0xCA01F9DD, 0x4973F715, 16
MASK32 = 0xFFFFFFFF


def _constants(init: int, mult: int, count: int) -> list[int]:
    """SeedSequence's running hash constant: `init`, multiplied by `mult` after each use (hash number k xors in
    constant k and multiplies by constant k + 1)."""
    out = [init]
    for _ in range(count):
        out.append((out[-1] * mult) & MASK32)
    return out


def _column(values) -> np.ndarray:
    return np.array(values, dtype=np.uint32)[:, None]


_A = _constants(INIT_A, MULT_A, POOL * POOL)  # mix_entropy: POOL hashes, then POOL - 1 per source word
_B = _constants(INIT_B, MULT_B, 2 * POOL)  # generate_state(4, uint64): 8 words
_FIRST = (_column(_A[:POOL]), _column(_A[1:POOL + 1]))
# Source word src's round: hash number POOL + src * (POOL - 1) + k goes into the k-th other word; the row of
# src itself gets a dummy (its result is thrown away).
_ROUNDS = []
for _src in range(POOL):
    _calls = [POOL + _src * (POOL - 1) + d - (d > _src) if d != _src else 0 for d in range(POOL)]
    _ROUNDS.append((_column([_A[c] for c in _calls]), _column([_A[c + 1] for c in _calls])))
_GENERATE = (_column(_B[:2 * POOL]), _column(_B[1:2 * POOL + 1]))
_SHIFT = np.uint32(XSHIFT)


def _hash(values: np.ndarray, constants: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """SeedSequence's hashmix: xor in one constant, multiply by the next, fold the high half in."""
    values = (values ^ constants[0]) * constants[1]
    return values ^ (values >> _SHIFT)


def pcg64_seeds(seed, indices: np.ndarray) -> np.ndarray:
    """[B, 4] uint64: `SeedSequence([seed, i]).generate_state(4, np.uint64)` for each i (`seed` one or one per
    index, each and every i in [0, 2**32)): numpy's mix_entropy and generate_state, hash by hash in their
    order, over the whole batch."""
    words = np.zeros((POOL, len(indices)), dtype=np.uint32)
    words[0], words[1] = seed, indices
    with np.errstate(over="ignore"):
        pool = _hash(words, _FIRST)
        for src in range(POOL):  # mix each word into every other (the three at once); the source keeps its own
            mixed = np.uint32(MIX_MULT_L) * pool - np.uint32(MIX_MULT_R) * _hash(pool[src], _ROUNDS[src])
            mixed ^= mixed >> _SHIFT
            mixed[src] = pool[src]
            pool = mixed
        state = _hash(np.concatenate([pool, pool]), _GENERATE).astype(np.uint64)
    return np.ascontiguousarray((state[0::2] | state[1::2] << np.uint64(32)).T)  # little-endian word pairs


class _State(ISeedSequence):
    """Hands PCG64 its precomputed state words (PCG64 asks its seed sequence for generate_state(4, uint64))."""

    def __init__(self, words: np.ndarray):
        self.words = words

    def generate_state(self, n_words, dtype=np.uint32):
        assert n_words == 4 and np.dtype(dtype) == np.uint64, (n_words, dtype)
        return self.words


def seeded_rngs(seed, indices) -> list[np.random.Generator]:
    """`[seeded_rng(seed, i) for i in indices]` (data_pipeline.loader), built for the batch at once; `seed`
    one, or one per index (several generators per sample in one go)."""
    indices = np.asarray(indices)
    seeds = np.broadcast_to(np.asarray(seed), indices.shape)
    if not len(indices) or min(seeds.min(), indices.min()) < 0 or max(seeds.max(), indices.max()) > MASK32:
        # SeedSequence's longer entropy (or its error)
        return [np.random.default_rng([int(s), int(i)]) for s, i in zip(seeds, indices, strict=True)]
    return [np.random.Generator(np.random.PCG64(_State(words))) for words in pcg64_seeds(seeds, indices)]


def seeded_rng_groups(seeds: list[int], indices) -> list[list[np.random.Generator]]:
    """For each of `seeds`, `seeded_rngs(seed, indices)`: all built in one go."""
    n = len(indices)
    made = seeded_rngs(np.repeat(np.asarray(seeds, dtype=np.int64), n), np.tile(np.asarray(indices), len(seeds)))
    return [made[k * n:(k + 1) * n] for k in range(len(seeds))]
