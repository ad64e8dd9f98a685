"""Exact k-NN manifold metrics: precision/recall (Kynkäänniemi et al. 2019) and density/coverage
(Naeem et al. 2020), decided exactly as float64 distances would, at float32 GEMM speed."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

#
# Precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020) need, for
# every pair (real, fake), whether their distance is within a k-NN radius. The reference of
# exactness is the float64 squared distance sq(a, b) = sum((a - b)**2) (`_exact_sq`); a point lies
# in a ball when sq(point, centre) <= radius^2 (Kynkäänniemi's `<=`; for continuous features ties
# have probability 0). Radii are the (k+1)-th smallest sq within a set, counting the point itself,
# i.e. the distance to the k-th nearest other point.
#
# Speed: every pair is first screened in float32, with one GEMM per block of rows,
#     s~ = |a|^2 + |b|^2 - 2 a.b      (features centred on a common point, cast to float32).
# Standard rounding analysis (u = 2^-24, Na = |a|, Nb = |b|) bounds its error to first order by
#     |s~ - sq| <= (D/2 + 5) u (Na + Nb)^2:
# gamma_D Na Nb for the dot product (any summation order, FMA or not), counted twice; 2u for the
# casts of a and b; u each for the rounded norms and the two additions. The margin used is
#     m = (D + 16) u (Na + max Nb)^2 + 4u |radius^2|,
# over twice the bound, and thresholds are rounded outward to float32. A pair whose s~ is more
# than m away from the radius^2 is decided by s~; the few inside the band are recomputed with
# `_exact_sq`. Radii take the k + 1 + 8 smallest s~ of each row and recompute those exactly; a
# row where the band could reach beyond those candidates is recomputed whole; distinct rows are
# handled once with their multiplicities, so thousands of identical images cost nothing extra.
# The decisions are therefore exactly those of `_exact_sq` on every pair, at float32 GEMM speed
# (the test suite checks this against brute force, with ties and duplicates).

_U32 = 2.0 ** -24
_EXTRA = 8  # candidates beyond k+1 for the radii
_BLOCK_ELEMS = 1 << 20  # elements of a screening block (4 MB float32): stays in cache between passes


@contextlib.contextmanager
def _ieee_fp32_matmul():
    """The screening bound assumes true float32 GEMM (no TF32/bf16 shortcuts)."""
    old = torch.get_float32_matmul_precision()
    if old != "highest":
        torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        if old != "highest":
            torch.set_float32_matmul_precision(old)


def _exact_sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared distances of paired rows a[i], b[i] in float64: the reference of exactness."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return (d * d).sum(axis=1)


def _exact_sq_block(a: np.ndarray, b: np.ndarray, chunk_bytes: int = 1 << 27) -> np.ndarray:
    """_exact_sq of every pair (a[i], b[j]) as an (len(a), len(b)) array, bit-identical to it (each
    value reduces the same contiguous run of d squares). For blocks where screening decides little
    (a collapsed generator puts all fakes at almost one point), chunked to bound memory."""
    out = np.empty((len(a), len(b)))
    rows = max(1, chunk_bytes // (8 * max(b.size, 1)))
    for lo in range(0, len(a), rows):
        d = a[lo:lo + rows, None, :] - b[None, :, :]
        out[lo:lo + rows] = (d * d).sum(axis=2)
    return out


def _f32_down(x: np.ndarray) -> torch.Tensor:
    """Largest float32 <= x (x float64)."""
    y = x.astype(np.float32)
    y = np.where(y.astype(np.float64) > x, np.nextafter(y, np.float32(-np.inf)), y)
    return torch.from_numpy(np.ascontiguousarray(y, np.float32))


def _f32_up(x: np.ndarray) -> torch.Tensor:
    """Smallest float32 >= x (x float64)."""
    y = x.astype(np.float32)
    y = np.where(y.astype(np.float64) < x, np.nextafter(y, np.float32(np.inf)), y)
    return torch.from_numpy(np.ascontiguousarray(y, np.float32))


class _Screen:
    """One feature set: float64 rows, centred float32 copies, their norms."""

    def __init__(self, feats: np.ndarray, centre: np.ndarray):
        self.f64 = np.ascontiguousarray(feats, dtype=np.float64)
        c32 = (self.f64 - centre).astype(np.float32)
        self.t32 = torch.from_numpy(c32)
        c = c32.astype(np.float64)
        self.sq64 = np.einsum("ij,ij->i", c, c)
        self.sq32 = torch.from_numpy(self.sq64.astype(np.float32))
        self.norm = np.sqrt(self.sq64)
        self.d = feats.shape[1]

    def margin(self, other: "_Screen", radii_sq: np.ndarray | float = 0.0) -> np.ndarray:
        """Bound on |s~ - sq| for each row of self against any row of other (see above)."""
        return (self.d + 16) * _U32 * (self.norm + other.norm.max()) ** 2 + 4 * _U32 * np.abs(radii_sq)

    def block_rows(self, other: "_Screen") -> int:
        return max(16, _BLOCK_ELEMS // max(len(other.f64), 1))

    def approx(self, other: "_Screen", lo: int, hi: int) -> torch.Tensor:
        """s~ for rows lo:hi of self against every row of other, float32 (hi - lo, N_other)."""
        s = torch.addmm(other.sq32[None, :], self.t32[lo:hi], other.t32.T, alpha=-2.0)
        return s.add_(self.sq32[lo:hi, None])


def _centre(*sets: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(s, np.float64) for s in sets]).mean(axis=0)


def _radii_sq(feats: np.ndarray, k: int) -> np.ndarray:
    """Exact squared distance of each point to its k-th nearest other point of the same set.

    Works on the distinct rows with their multiplicities (a collapsed generator can emit thousands of
    identical images): a point's radius^2 is the (k+1)-th smallest of the multiset {sq(point, v)
    repeated count(v) times over distinct v}, itself included at 0."""
    feats = np.asarray(feats, np.float64)
    if len(feats) < k + 1:
        raise ValueError(f"k = {k} needs at least {k + 1} points, got {len(feats)}")
    uniq, inverse, counts = np.unique(feats, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    # centred on this set: the screening margin scales with the norms, so a tight cluster (a
    # collapsed generator) far from the origin would otherwise leave every row to the exact pass
    s = _Screen(uniq, uniq.mean(axis=0))
    n = len(uniq)
    kk = min(k + 1 + _EXTRA, n)
    out = np.empty(n)
    margin = s.margin(s)

    def weighted_kth(exact: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """(k+1)-th smallest of each row of `exact`, each entry repeated counts[idx] times."""
        order = np.argsort(exact, axis=1, kind="stable")
        cum = np.cumsum(counts[np.take_along_axis(idx, order, 1)], axis=1)
        pos = (cum < k + 1).sum(axis=1)  # first position reaching k+1
        return np.take_along_axis(exact, order, 1)[np.arange(len(exact)), pos]

    step = s.block_rows(s)
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        vals, idx = torch.topk(s.approx(s, lo, hi), kk, dim=1, largest=False, sorted=True)
        idx, vals = idx.numpy(), vals.numpy().astype(np.float64)
        rows = np.repeat(np.arange(lo, hi), kk)
        exact = _exact_sq(s.f64[rows], s.f64[idx.ravel()]).reshape(hi - lo, kk)
        out[lo:hi] = weighted_kth(exact, idx)
        if kk < n:
            # Counts are >= 1, so the weighted (k+1)-th of s~ is at most vals[:, k]; every point that
            # can be among the k+1 nearest has s~ <= vals[:, k] + 2m. If that reaches the last
            # candidate, points beyond the candidates might count: redo the row over all points.
            m = margin[lo:hi] + 4 * _U32 * np.abs(vals[:, k])
            unsafe = np.flatnonzero(vals[:, -1] <= vals[:, k] + 2.0001 * m)
            everyone = np.broadcast_to(np.arange(n), (len(unsafe), n))
            for c in range(0, len(unsafe), 64):
                rows = lo + unsafe[c:c + 64]
                full = _exact_sq_block(s.f64[rows], s.f64)
                out[rows] = weighted_kth(full, everyone[:len(rows)])
    return out[inverse]


def _inside(real: _Screen, fake: _Screen, r_real: np.ndarray, r_fake: np.ndarray):
    """Ball memberships of every (real i, fake j) pair, reduced as the metrics need them.

    in_real[i, j] = sq(i, j) <= r_real[i] (fake j inside real i's ball), in_fake[i, j] = sq(i, j) <=
    r_fake[j]. Returns (real balls holding each fake, real ball holds some fake, fake inside some
    real ball, real inside some fake ball)."""
    nr, nf = len(real.f64), len(fake.f64)
    count_per_fake = torch.zeros(nf, dtype=torch.int64)
    real_covered = np.zeros(nr, dtype=bool)
    fake_in_real = torch.zeros(nf, dtype=torch.bool)
    real_in_fake = np.zeros(nr, dtype=bool)
    m_row = real.margin(fake, r_real)
    row_lo, row_hi = _f32_down(r_real - m_row), _f32_up(r_real + m_row)
    m_col = fake.margin(real, r_fake)
    col_lo, col_hi = _f32_down(r_fake - m_col)[None, :], _f32_up(r_fake + m_col)[None, :]
    step = real.block_rows(fake)
    for lo in range(0, nr, step):
        hi = min(lo + step, nr)
        s = real.approx(fake, lo, hi)
        passes = [(r_real, s <= row_lo[lo:hi, None], s <= row_hi[lo:hi, None], True),
                  (r_fake, s <= col_lo, s <= col_hi, False)]
        band = sum(int((maybe_in ^ sure_in).sum()) for _, sure_in, maybe_in, _ in passes)
        if band > s.numel() // 4:
            # screening decided little here: exact distances for the whole block are cheaper
            exact = torch.from_numpy(_exact_sq_block(real.f64[lo:hi], fake.f64))
            passes = [(r_real, exact <= torch.from_numpy(r_real[lo:hi, None]), None, True),
                      (r_fake, exact <= torch.from_numpy(r_fake[None, :]), None, False)]
        for radii, sure_in, maybe_in, per_row in passes:
            i, j = (torch.nonzero(maybe_in ^ sure_in, as_tuple=True) if maybe_in is not None
                    else ((),) * 2)  # the band: decide exactly
            if len(i):
                i, j = i.numpy(), j.numpy()
                ok = _exact_sq(real.f64[lo + i], fake.f64[j]) <= (radii[lo + i] if per_row else radii[j])
                sure_in[torch.from_numpy(i[ok]), torch.from_numpy(j[ok])] = True
            if per_row:
                count_per_fake += sure_in.sum(0)
                real_covered[lo:hi] = sure_in.any(1).numpy()
                fake_in_real |= sure_in.any(0)
            else:
                real_in_fake[lo:hi] = sure_in.any(1).numpy()
    return count_per_fake.numpy(), real_covered, fake_in_real.numpy(), real_in_fake


def knn_metrics(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
    """precision, recall (Kynkäänniemi et al. 2019), density, coverage (Naeem et al. 2020) of fake
    features against real features, with k-NN radii; exact as explained above. Sets of any sizes
    (`evaluate_features` passes equal-sized ones, as the papers do)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature shapes do not match: {real.shape} vs {fake.shape}")
    centre = _centre(real, fake)
    with _ieee_fp32_matmul():
        r_real, r_fake = _radii_sq(real, k), _radii_sq(fake, k)
        sr, sf = _Screen(real, centre), _Screen(fake, centre)
        count, covered, fake_in_real, real_in_fake = _inside(sr, sf, r_real, r_fake)
    return {"precision": float(fake_in_real.mean()), "recall": float(real_in_fake.mean()),
            "density": float(count.mean() / k), "coverage": float(covered.mean())}


def precision_recall(real_feats: np.ndarray, fake_feats: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Kynkäänniemi et al. 2019: precision = share of fakes inside the real manifold (the union of
    the k-NN balls around real points); recall = share of reals inside the fake manifold."""
    m = knn_metrics(real_feats, fake_feats, k)
    return m["precision"], m["recall"]


def density_coverage(real_feats: np.ndarray, fake_feats: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Naeem et al. 2020: density = mean over fakes of (number of real k-NN balls holding it) / k
    (about 1 when fake matches real, above 1 when fakes crowd dense regions); coverage = share of
    real points whose k-NN ball holds at least one fake."""
    m = knn_metrics(real_feats, fake_feats, k)
    return m["density"], m["coverage"]


def knn_radii(feats: np.ndarray, k: int) -> np.ndarray:
    """Distance of each point to its k-th nearest other point (exact, float64)."""
    feats = np.asarray(feats, np.float64)
    with _ieee_fp32_matmul():
        return np.sqrt(_radii_sq(feats, k))
