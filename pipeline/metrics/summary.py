"""Every metric of a generated set against a real reference set, as the evaluate stage and the
evaluator's floor report them."""
from __future__ import annotations

import numpy as np

from pipeline.metrics.classifier_score import class_histogram, classes_covered, classifier_score
from pipeline.metrics.fid import fid, fid_standard_error, gaussian_stats
from pipeline.metrics.kid import kid
from pipeline.metrics.knn import knn_metrics
from pipeline.metrics.ordering import subsample
from pipeline.metrics.registry import DRAWN, SCALARS

# the version of how metrics are computed, recorded with every evaluation: 3 = against MNIST's t10k
# reference (10,000 digits; pipeline.data.load_reference), KID added; 2 = against the 1,000 held-out
# digits, subsets and splits ordered by machine-independent keys (ordering.py); 1 = by the float bytes of
# probabilities/features
METRICS_VERSION = 3

# the scalar metrics and which are averaged over draws: pipeline/metrics/registry.py (the k-NN metrics, KID
# and the class histogram are the first draw's: each costs an N x N pass)

KID_DECIMALS = 8  # KID's scale is its features' (kid.py): Inception's ~1e-3 would lose its digits at 5 decimals


def round_scalars(m: dict, keys=SCALARS) -> dict:
    """`keys` of `m` as the JSON outputs store them: floats to 5 decimals, KID's to KID_DECIMALS (MLflow
    gets every value unrounded)."""
    return {k: round(float(m[k]), KID_DECIMALS if k.startswith("kid") else 5) if isinstance(m[k], float) else m[k]
            for k in keys}


def evaluate_features(real_feats, real_probs, fake_feats, fake_probs, k: int = 3, splits: int = 10,
                      real_keys=None, fake_keys=None) -> dict:
    """Every metric of a generated set against a real reference set:

    fid and fid_se (its sampling standard error, fid_standard_error), kid and kid_se (its jackknife standard
    error), classifier_score, classifier_score_std (of the
    fakes, `splits` splits), precision, recall,
    density, coverage (k-NN, `k`), classes_covered, class_histogram (list of 10 counts), n_knn.

    FID, KID and the classifier score use every sample. The k-NN metrics depend on the set sizes (radii
    shrink as sets grow), so, as in the papers, they compare equal-sized sets: n_knn = min(N_real,
    N_fake) rows of each, the larger set subsampled by `subsample` (order-independent). `real_probs`
    is accepted for symmetry and not used.

    `real_keys`/`fake_keys`: what the samples are ordered by for subsets and splits, the images the
    features came from (uint8, the same bits on every machine); default: the features and
    probabilities themselves, rounded well above their float noise (metrics.ordering)."""
    del real_probs
    real_feats, fake_feats = np.asarray(real_feats, np.float64), np.asarray(fake_feats, np.float64)
    n = min(len(real_feats), len(fake_feats))
    cs, cs_std = classifier_score(fake_probs, splits, keys=fake_keys)
    knn = knn_metrics(subsample(real_feats, n, real_keys), subsample(fake_feats, n, fake_keys), k)
    hist = class_histogram(fake_probs)
    kid_value, kid_se = kid(real_feats, fake_feats, real_keys, fake_keys)
    real_stats = gaussian_stats(real_feats)
    return {"fid": fid(real_feats, fake_feats), "fid_se": fid_standard_error(real_stats, fake_feats), "kid": kid_value, "kid_se": kid_se, "classifier_score": cs,
            "classifier_score_std": cs_std,
            **knn, "classes_covered": classes_covered(hist), "class_histogram": hist, "n_knn": n}


def evaluate_draws(real_feats, real_probs, draws, k: int = 3, splits: int = 10, real_keys=None) -> dict:
    """`evaluate_features` over several independent draws of one generator, `draws` a list of (fake_feats,
    fake_probs, fake_keys): FID and the classifier score (DRAWN) are the means over the draws, so their
    sampling noise shrinks as 1/√draws (FID's first-order noise is real: fid_standard_error), each with its
    standard error over the draws (fid_se: the delta-method SE of one draw / √draws, which needs no second
    draw; classifier_score_se: the draws' SD / √draws; for one draw its splits' SD / √splits); every other metric is the first
    draw's (draw 0 = the evaluation of earlier metrics versions). `per_draw`: each draw's DRAWN values."""
    first = evaluate_features(real_feats, real_probs, *draws[0][:2], k, splits, real_keys=real_keys,
                              fake_keys=draws[0][2])
    real_stats = gaussian_stats(real_feats)
    per_draw = {m: [float(first[m])] for m in DRAWN}
    ses = [first["fid_se"]]
    for fake_feats, fake_probs, keys in draws[1:]:
        per_draw["fid"].append(fid(real_feats, fake_feats))
        ses.append(fid_standard_error(real_stats, fake_feats))
        per_draw["classifier_score"].append(classifier_score(fake_probs, splits, keys=keys)[0])
    n = len(draws)
    cs = np.asarray(per_draw["classifier_score"])
    return {**first, **{m: float(np.mean(v)) for m, v in per_draw.items()},
            "fid_se": float(np.sqrt(np.mean(np.square(ses))) / np.sqrt(n)),
            # one draw: its splits' SD / √splits stands in for the SD over draws
            "classifier_score_se": float(cs.std(ddof=1) / np.sqrt(n)) if n > 1 else
            float(first["classifier_score_std"] / np.sqrt(splits)),
            "draws": n, "per_draw": per_draw}
