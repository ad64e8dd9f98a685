"""KID (Bińkowski et al. 2018): the unbiased estimate of MMD² between two feature sets with the cubic
polynomial kernel k(x, y) = (x·y/d + 1)^3, and its standard error.

Unlike FID, KID is unbiased: two samples of one distribution score 0 in expectation at any sizes, so
its real-data floor is ~0 and values at different N compare directly (only their noise differs).

- The estimate uses every pair of the two sets, not the mean over random 1,000-image subsets that the
  reference implementations report: the same expectation, a smaller variance and no random draw.
- Its standard error is the delete-a-group jackknife: each set is cut into `groups` disjoint groups,
  contiguous in `canonical_order` of its keys (the images' bytes, as the k-NN subsets are drawn), the
  estimate is recomputed without group g of both sets for every g, and
  SE^2 = (G-1)/G * sum_g (kid_-g - mean)^2. It costs nothing beyond the estimate: the kernel is summed
  per (group, group) block in one pass, and every leave-one-out estimate comes from those block sums.

KID's scale is the features': on this project's evaluators (feature norms ~65, x·y/d ~18) the kernel is
~6,000 and KID is O(1..100), not the O(1e-3) of Inception features, so it is stored and logged as is.

float64 throughout (the estimate is a small difference of large kernel means); O((m+n)^2 d) flops in
row tiles, so memory stays at TILE x n.
"""
from __future__ import annotations

import numpy as np

from pipeline.metrics.ordering import canonical_order

GROUPS = 50  # jackknife groups: enough for a steady SE (49 df), each group still 200 images at N = 10,000
TILE = 1024  # kernel rows per block: 1024 x 10,000 float64 = 80 MB


def _groups(n: int, g: int) -> np.ndarray:
    """Group of each of n rows, g contiguous groups of near-equal size (np.array_split's)."""
    return np.repeat(np.arange(g), [len(part) for part in np.array_split(np.arange(n), g)])


def _kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """k(a_i, b_j) = (a_i·b_j/d + 1)^3 for every pair, in place where numpy allows."""
    k = a @ b.T
    k *= 1.0 / a.shape[1]
    k += 1.0
    cube = k * k
    cube *= k
    return cube


def _add_group_sums(block: np.ndarray, g_rows: np.ndarray, g_cols: np.ndarray, out: np.ndarray) -> None:
    """out[i, j] += the sum of block's entries whose row is in group i and column in group j
    (groups sorted along both axes)."""
    r = np.flatnonzero(np.r_[True, g_rows[1:] != g_rows[:-1]])
    c = np.flatnonzero(np.r_[True, g_cols[1:] != g_cols[:-1]])
    out[np.ix_(g_rows[r], g_cols[c])] += np.add.reduceat(np.add.reduceat(block, c, axis=1), r, axis=0)


def _cross_sums(a: np.ndarray, b: np.ndarray, ga: np.ndarray, gb: np.ndarray, g: int) -> np.ndarray:
    """S[i, j] = sum of k(a_r, b_c) over rows r of group i of `a` and c of group j of `b`."""
    out = np.zeros((g, g))
    for lo in range(0, len(a), TILE):
        _add_group_sums(_kernel(a[lo:lo + TILE], b), ga[lo:lo + TILE], gb, out)
    return out


def _within_sums(a: np.ndarray, ga: np.ndarray, g: int) -> np.ndarray:
    """_cross_sums(a, a): the kernel matrix is symmetric, so only tiles on and right of the diagonal are
    computed (a third less work for KID). The diagonal k(a_r, a_r) is included."""
    square, right = np.zeros((g, g)), np.zeros((g, g))
    n = len(a)
    for lo in range(0, n, TILE):
        hi = min(lo + TILE, n)
        k = _kernel(a[lo:hi], a[lo:])
        _add_group_sums(k[:, :hi - lo], ga[lo:hi], ga[lo:hi], square)
        if hi < n:
            _add_group_sums(k[:, hi - lo:], ga[lo:hi], ga[hi:], right)
    return square + right + right.T


_REAL_SUMS: dict[tuple[str, int], np.ndarray] = {}  # the reference's sums: the same at every evaluation


def _real_within_sums(x: np.ndarray, gx: np.ndarray, g: int) -> np.ndarray:
    """_within_sums of the reference set, computed once per process and machine (a run scores the same
    reference at each checkpoint evaluation and by two evaluators: ~2 s each on 2 cores); a copy, which
    kid() modifies."""
    import hashlib

    from pipeline.memo import kid_reference_sums

    key = (hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest(), g)
    if key not in _REAL_SUMS:
        if len(_REAL_SUMS) >= 4:
            _REAL_SUMS.pop(next(iter(_REAL_SUMS)))
        # also kept on disk (pipeline.memo): every process of every run scores the same reference
        _REAL_SUMS[key] = kid_reference_sums(x, g, lambda: _within_sums(x, gx, g))
    return _REAL_SUMS[key].copy()


def _mmd2(sxx: float, syy: float, sxy: float, m: float, n: float) -> np.ndarray | float:
    """Unbiased MMD^2 from kernel sums (within-set sums without the diagonal) and set sizes."""
    return sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2 * sxy / (m * n)


def _without_each(s: np.ndarray) -> np.ndarray:
    """For each group g: the sum of the block sums S[i, j] over i != g and j != g."""
    return s.sum() - s.sum(axis=1) - s.sum(axis=0) + np.diagonal(s)


def kid(real_feats: np.ndarray, fake_feats: np.ndarray, real_keys=None, fake_keys=None,
        groups: int = GROUPS) -> tuple[float, float]:
    """(KID, its jackknife standard error) of two feature sets (N, d), see the module docstring.
    `real_keys`/`fake_keys`: what the groups are ordered by (default: the features themselves)."""
    x = np.asarray(real_feats, np.float64)
    y = np.asarray(fake_feats, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"feature shapes do not match: {x.shape} vs {y.shape}")
    if min(len(x), len(y)) < 4:  # 2 groups of 2: every leave-one-out set keeps a pair of each
        raise ValueError(f"KID needs at least 4 rows of each set, got {len(x)} and {len(y)}")
    g = max(2, min(groups, len(x) // 2, len(y) // 2))
    x = x[canonical_order(x if real_keys is None else real_keys)]
    y = y[canonical_order(y if fake_keys is None else fake_keys)]
    gx, gy = _groups(len(x), g), _groups(len(y), g)
    sxx, syy, sxy = _real_within_sums(x, gx, g), _within_sums(y, gy, g), _cross_sums(x, y, gx, gy, g)
    d = x.shape[1]
    # the diagonal k(x_i, x_i) is not a pair: out of the within-set sums
    np.subtract.at(sxx, (gx, gx), (np.einsum("ij,ij->i", x, x) / d + 1) ** 3)
    np.subtract.at(syy, (gy, gy), (np.einsum("ij,ij->i", y, y) / d + 1) ** 3)
    m, n = len(x), len(y)
    estimate = float(_mmd2(sxx.sum(), syy.sum(), sxy.sum(), m, n))
    mx, ny = m - np.bincount(gx, minlength=g), n - np.bincount(gy, minlength=g)
    loo = _mmd2(_without_each(sxx), _without_each(syy), _without_each(sxy), mx, ny)
    se = float(np.sqrt((g - 1) / g * np.sum((loo - loo.mean()) ** 2)))
    return estimate, se
