"""A canonical order of samples that depends on neither their input order nor the machine: every
metric that needs a subset or splits takes them in this order, so it gives the same value for the
same samples whatever order they come in, and on any CPU class.

Why the machine matters: the last bits of a float (a probability from numpy's SIMD `exp`, a feature
from the evaluator's convolutions) differ between CPU classes (AVX2 vs AVX-512). Hashing those bytes
would move every sample to another split for one ULP of difference. So the order is taken from

- integer rows (the generated images' uint8 bytes, which DVC stores) as they are, bit for bit, or
- float rows rounded to `KEY_BITS` significant bits (relative 2**-20, ~1e-6) first: well above the
  rounding noise of float64 (2**-52) and of fp32 arithmetic on another CPU (~1e-7), so a few ULPs of
  noise change a key only where a value lies within those ULPs of a rounding boundary (odds ~1e-9 a
  value).

Each row's position comes from its own hash alone, so a row whose key does change moves by itself:
the others keep their relative order, and contiguous splits change by at most one row per boundary.

`metrics.METRICS_VERSION` names this scheme in every evaluation's output."""
from __future__ import annotations

import numpy as np

KEY_BITS = 20           # significant bits of a float kept in its key
TINY = 2.0 ** -100      # |x| below this keys as 0 (an exp that underflows to 0 on one CPU, 1e-310 on another)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that spreads every input bit over the output."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def order_keys(rows: np.ndarray) -> np.ndarray:
    """What a row's position is computed from, as a 2-D integer array (N, values): integer and boolean
    rows unchanged; float rows rounded to KEY_BITS significant bits (round half away from zero on the
    IEEE bit pattern: exact integer arithmetic, the same on every machine), -0.0 and tiny values as 0."""
    a = np.asarray(rows)
    flat = a.reshape(len(a), -1)
    if a.dtype.kind in "iub":
        return np.ascontiguousarray(flat)
    if a.dtype.kind != "f":
        raise TypeError(f"cannot order rows of dtype {a.dtype}")
    x = flat.astype(np.float64)
    x = np.where(np.abs(x) < TINY, 0.0, x) + 0.0  # + 0.0 turns -0.0 into 0.0
    bits = x.view(np.uint64)
    drop = 52 - KEY_BITS
    # adding half a step to the magnitude bits may carry into the exponent: that is the rounding up
    rounded = (bits + np.uint64(1 << (drop - 1))) & ~np.uint64((1 << drop) - 1)
    return np.where(np.isfinite(x), rounded, bits)


def _row_hashes(keys: np.ndarray) -> np.ndarray:
    """One 64-bit hash per row of a 2-D array, from its bytes."""
    words = np.ascontiguousarray(keys).view(np.uint8).reshape(len(keys), -1)
    pad = (-words.shape[1]) % 8
    if pad:
        words = np.concatenate([words, np.zeros((len(keys), pad), np.uint8)], axis=1)
    words = np.ascontiguousarray(words).view(np.uint64)
    with np.errstate(over="ignore"):
        h = np.full(len(keys), _GOLDEN, dtype=np.uint64)
        for c in range(words.shape[1]):
            h = _mix(h ^ words[:, c] ^ np.uint64(c))
    return h


def canonical_order(rows: np.ndarray) -> np.ndarray:
    """A pseudo-random permutation of the rows that depends only on their contents (see the module's
    docstring): neither their order nor the last bits of float values change it.

    Rows are placed by a 64-bit hash of their key (`order_keys`). Rows with equal keys (a collapsed
    generator's identical images) are numbered 0, 1, 2, ... among themselves and the number is mixed
    into the hash, so duplicates are spread over the order rather than kept together; equal-key rows
    are numbered in the order of their exact bytes, so which is which does not depend on input order."""
    a = np.asarray(rows)
    if len(a) == 0:
        return np.zeros(0, dtype=np.int64)
    h = _row_hashes(order_keys(a))
    exact = _row_hashes(a.reshape(len(a), -1))
    by_key = np.lexsort((exact, h))  # equal keys together, in the order of their exact bytes
    hs = h[by_key]
    pos = np.arange(len(hs))
    group_start = np.maximum.accumulate(np.where(np.r_[True, hs[1:] != hs[:-1]], pos, 0))
    copy = (pos - group_start).astype(np.uint64)
    with np.errstate(over="ignore"):
        placed = np.where(copy == 0, hs, _mix(hs ^ (copy * _GOLDEN)))
    return by_key[np.argsort(placed, kind="stable")]


def subsample(rows: np.ndarray, n: int, keys: np.ndarray | None = None) -> np.ndarray:
    """n rows chosen by `canonical_order` (order-independent, machine-independent, pseudo-random);
    `keys`: rows to order by instead (the images the feature rows were computed from)."""
    if n >= len(rows):
        return rows
    if keys is not None and len(keys) != len(rows):
        raise ValueError(f"{len(keys)} keys for {len(rows)} rows")
    order = canonical_order(rows if keys is None else keys)
    return rows[np.sort(order[:n])]
