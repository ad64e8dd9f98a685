"""The real-data floor: what real digits score against real digits, i.e. each estimator's bias at given
sizes. The reference is split into two disjoint halves (in canonical order of the images), one in the
role of the generated set: both halves come from one distribution and neither was seen by the
evaluator, so whatever a metric reports beyond its ideal is the estimator's finite-sample bias at those
sizes. KID, unbiased, sits at ~0 (within its SE). FID does not: for two samples of one distribution its
expectation is about c (1/N1 + 1/N2), with no constant term, so the floor also gives the halves' FID
scaled to two sets of the whole reference's size (the evaluation's default sizes) and, as a check of
that scaling, the FID of disjoint quarters (expected: about twice the halves'). (A fit with a constant
term through N/4 and N/2 rests on one pair of noisy values and can land below 0.) The k-NN metrics and
the classifier score depend on the sizes too (k-NN radii, split sizes): read them at the sizes
recorded beside them."""
from __future__ import annotations

import numpy as np

from pipeline.metrics.fid import fid
from pipeline.metrics.ordering import canonical_order
from pipeline.metrics.summary import evaluate_features


def real_floor(feats: np.ndarray, probs: np.ndarray, keys: np.ndarray, k: int = 3, splits: int = 10) -> dict:
    """evaluate_features' keys for one half of the reference (`feats`, `probs` of the images `keys`)
    against the other, plus n_real, n_fake (the halves' sizes), fid_quarters and n_quarters (FID of
    disjoint quarters, the mean of the two pairs), fid_extrapolated and n_extrapolated: the halves'
    FID scaled as 1/N to n_extrapolated (the reference's size) in both sets."""
    feats, keys = np.asarray(feats, np.float64), np.asarray(keys)
    if len(feats) < 16:
        raise ValueError(f"the floor needs at least 16 reference rows, got {len(feats)}")
    order = canonical_order(keys)
    half = len(order) // 2
    a, b = np.sort(order[:half]), np.sort(order[half:2 * half])
    m = evaluate_features(feats[a], probs[a], feats[b], probs[b], k, splits, real_keys=keys[a], fake_keys=keys[b])
    quarters = np.array_split(order[:4 * (len(order) // 4)], 4)
    fid_q = float(np.mean([fid(feats[quarters[0]], feats[quarters[1]]), fid(feats[quarters[2]], feats[quarters[3]])]))
    return {**m, "n_real": half, "n_fake": half, "fid_quarters": fid_q, "n_quarters": len(quarters[0]),
            "fid_extrapolated": m["fid"] * half / len(order), "n_extrapolated": len(order)}
