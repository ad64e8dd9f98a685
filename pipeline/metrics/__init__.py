"""GAN metrics on evaluator features, one module each, in float64:

- fid.py: FID, and the quick FID logged during training
- kid.py: KID (unbiased MMD², cubic polynomial kernel) and its jackknife standard error
- classifier_score.py: classifier score, class histogram, classes covered
- knn.py: precision/recall, density/coverage (exact k-NN)
- ordering.py: the canonical sample order that makes every metric order-independent
- summary.py: all of them for one generated set (`evaluate_features`)
- floor.py: what real digits score against the reference: each estimator's bias at given sizes
"""
from pipeline.metrics.classifier_score import MIN_CLASS_SHARE, class_histogram, classes_covered, classifier_score
from pipeline.metrics.fid import RealReference, fid, fid_standard_error, frechet_distance, gaussian_stats, quick_fid
from pipeline.metrics.kid import kid
from pipeline.metrics.knn import density_coverage, knn_metrics, knn_radii, precision_recall
from pipeline.metrics.ordering import canonical_order, order_keys, subsample
from pipeline.metrics.summary import METRICS_VERSION, SCALARS, evaluate_draws, evaluate_features, round_scalars
from pipeline.metrics.floor import real_floor

__all__ = ["METRICS_VERSION", "MIN_CLASS_SHARE", "RealReference", "SCALARS", "canonical_order", "class_histogram",
           "classes_covered", "classifier_score", "density_coverage", "evaluate_draws", "evaluate_features", "fid", "fid_standard_error", "frechet_distance",
           "gaussian_stats", "kid", "knn_metrics", "knn_radii", "order_keys", "precision_recall", "quick_fid",
           "real_floor", "round_scalars", "subsample"]
