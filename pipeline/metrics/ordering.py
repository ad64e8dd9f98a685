"""A canonical, order-independent order of samples: every metric is invariant to the order in which
the samples come (where one needs a subset or splits, it takes them in this order)."""
from __future__ import annotations

import numpy as np

def canonical_order(rows: np.ndarray) -> np.ndarray:
    """A pseudo-random permutation whose result depends only on the rows' contents, not their order.

    The rows are sorted by a 64-bit hash of their bytes (splitmix64-mixed); equal rows tie, and which
    of them goes where does not matter since they are the same data. That sorted sequence is then
    shuffled by a fixed permutation of its positions (seeded, depends on N only), so that duplicates
    (a collapsed generator's identical images) are spread out rather than kept together. Used to pick
    subsets and splits in a way that shuffling the input cannot change."""
    a = np.ascontiguousarray(rows)
    if len(a) == 0:
        return np.zeros(0, dtype=np.int64)
    words = a.reshape(len(a), -1).view(np.uint8)
    pad = (-words.shape[1]) % 8
    if pad:
        words = np.concatenate([words, np.zeros((len(a), pad), np.uint8)], axis=1)
    words = np.ascontiguousarray(words).view(np.uint64)

    def mix(z):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))

    with np.errstate(over="ignore"):
        h = np.full(len(a), 0x9E3779B97F4A7C15, dtype=np.uint64)
        for c in range(words.shape[1]):
            h = mix(h ^ words[:, c] ^ np.uint64(c))
    return np.argsort(h, kind="stable")[np.random.default_rng(0x5A6A).permutation(len(a))]


def subsample(rows: np.ndarray, n: int) -> np.ndarray:
    """n rows chosen by `canonical_order` (order-independent, deterministic, pseudo-random)."""
    if n >= len(rows):
        return rows
    return rows[np.sort(canonical_order(rows)[:n])]
