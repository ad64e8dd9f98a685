"""Every metric of a generated set against a real reference set, as the evaluate stage and the
evaluator's floor report them."""
from __future__ import annotations

import numpy as np

from pipeline.metrics.classifier_score import class_histogram, classes_covered, classifier_score
from pipeline.metrics.fid import fid
from pipeline.metrics.knn import knn_metrics
from pipeline.metrics.ordering import subsample

# the scalar metrics, in the order metrics/evaluate.json and metrics/evaluator.json ("floor") list them
# the version of how metrics are computed, recorded with every evaluation: 2 = subsets and splits ordered
# by machine-independent keys (ordering.py); 1 = by the float bytes of probabilities/features
METRICS_VERSION = 2

SCALARS = ("fid", "classifier_score", "classifier_score_std", "precision", "recall", "density", "coverage",
           "classes_covered")


def evaluate_features(real_feats, real_probs, fake_feats, fake_probs, k: int = 3, splits: int = 10,
                      real_keys=None, fake_keys=None) -> dict:
    """Every metric of a generated set against a real reference set:

    fid, classifier_score, classifier_score_std (of the fakes, `splits` splits), precision, recall,
    density, coverage (k-NN, `k`), classes_covered, class_histogram (list of 10 counts), n_knn.

    FID and the classifier score use every sample. The k-NN metrics depend on the set sizes (radii
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
    return {"fid": fid(real_feats, fake_feats), "classifier_score": cs, "classifier_score_std": cs_std,
            **knn, "classes_covered": classes_covered(hist), "class_histogram": hist, "n_knn": n}
