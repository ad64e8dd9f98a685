"""GAN metrics on evaluator features, one module each, in float64:

- fid.py: FID, and the quick FID logged during training
- classifier_score.py: classifier score, class histogram, classes covered
- knn.py: precision/recall, density/coverage (exact k-NN)
- ordering.py: the canonical sample order that makes every metric order-independent
- summary.py: all of them for one generated set (`evaluate_features`)
"""
from pipeline.metrics.classifier_score import MIN_CLASS_SHARE, class_histogram, classes_covered, classifier_score
from pipeline.metrics.fid import RealReference, fid, frechet_distance, gaussian_stats, quick_fid
from pipeline.metrics.knn import density_coverage, knn_metrics, knn_radii, precision_recall
from pipeline.metrics.ordering import canonical_order, order_keys, subsample
from pipeline.metrics.summary import METRICS_VERSION, SCALARS, evaluate_features

__all__ = ["METRICS_VERSION", "MIN_CLASS_SHARE", "RealReference", "SCALARS", "canonical_order", "class_histogram", "classes_covered",
           "classifier_score", "density_coverage", "evaluate_features", "fid", "frechet_distance",
           "gaussian_stats", "knn_metrics", "knn_radii", "order_keys", "precision_recall", "quick_fid", "subsample"]
