"""The classifier score (the Inception score computed with the MNIST evaluator) and the class histogram
of generated digits."""
from __future__ import annotations

import numpy as np

from pipeline.metrics.ordering import canonical_order

def classifier_score(probs: np.ndarray, splits: int = 10, keys: np.ndarray | None = None) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) per split, then mean and std over the splits: the Inception score
    computed with the MNIST evaluator's class probabilities (N, 10).

    Between 1 (every image gets the same prediction) and 10 (confident predictions, uniform over the
    classes). Splits are contiguous after `canonical_order` of `keys` (the images the probabilities
    came from; default: the probabilities, rounded well above their float noise), so the result
    depends neither on the samples' order nor on the CPU that computed them; p(y) is each split's mean
    prediction, as in the original Inception score."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) == 0:
        raise ValueError(f"expected probabilities (N, C), got shape {probs.shape}")
    if keys is not None and len(keys) != len(probs):
        raise ValueError(f"{len(keys)} keys for {len(probs)} rows of probabilities")
    probs = probs[canonical_order(probs if keys is None else keys)]
    scores = []
    for part in np.array_split(probs, min(splits, len(probs))):
        py = part.mean(axis=0, keepdims=True)
        kl = np.sum(part * (np.log(np.clip(part, 1e-12, None)) - np.log(np.clip(py, 1e-12, None))), axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


MIN_CLASS_SHARE = 0.02


def class_histogram(probs: np.ndarray) -> list[int]:
    """Images per predicted class (argmax), 10 counts."""
    probs = np.asarray(probs)
    return np.bincount(probs.argmax(axis=1), minlength=10).astype(int).tolist() if len(probs) else [0] * 10


def classes_covered(hist: list[int], min_share: float = MIN_CLASS_SHARE) -> int:
    """Classes that receive at least `min_share` of the samples: 2%, a fifth of the uniform 10%, so
    that a few misclassified blobs do not count as a class. Mode collapse shows as fewer than 10."""
    total = sum(hist)
    if total == 0:
        return 0
    return int(sum(c / total >= min_share for c in hist))
