"""GAN metrics on evaluator features: FID, classifier score, precision/recall, density/coverage,
class histogram. Each is a small function of feature or probability arrays, in float64.

FID here is the Fréchet distance between Gaussians fitted to the MNIST evaluator's penultimate
features (not Inception's), so values are comparable across runs of this project only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch


# ---------------------------------------------------------------- FID

def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)), as pytorch-fid computes it:

    - sqrt(S1 S2) by scipy.linalg.sqrtm; if the product is near-singular and the result is not
      finite, eps * I is added to both covariances and the root is taken again;
    - numerical error can leave a tiny imaginary part: it is dropped when the diagonal's imaginary
      parts are below 1e-3, otherwise a ValueError is raised (the inputs are broken).
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("mean vectors and covariances must have the same shapes")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    feats = np.asarray(feats, dtype=np.float64)
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def fid(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    return frechet_distance(*gaussian_stats(feats_a), *gaussian_stats(feats_b))


# ---------------------------------------------------------------- classifier score

def classifier_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) per split: mean and std over splits (the Inception score, on an
    MNIST classifier). 10 at most (confident and uniform over classes), 1 for constant predictions."""
    probs = np.asarray(probs, dtype=np.float64)
    scores = []
    for part in np.array_split(probs, splits):
        if len(part) == 0:
            continue
        py = part.mean(axis=0, keepdims=True)
        kl = np.sum(part * (np.log(np.clip(part, 1e-12, None)) - np.log(np.clip(py, 1e-12, None))), axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


# ---------------------------------------------------------------- k-NN manifolds

def _pairwise(a: np.ndarray, b: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Euclidean distances in float64 (exact enough to compare against radii), chunked."""
    ta, tb = torch.from_numpy(np.ascontiguousarray(a, np.float64)), torch.from_numpy(np.ascontiguousarray(b, np.float64))
    out = torch.empty(len(a), len(b), dtype=torch.float64)
    for i in range(0, len(a), chunk):
        out[i:i + chunk] = torch.cdist(ta[i:i + chunk], tb, compute_mode="donot_use_mm_for_euclid_dist")
    return out.numpy()


def knn_radii(feats: np.ndarray, k: int) -> np.ndarray:
    """Distance of each point to its k-th nearest other point (sklearn, exact)."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k + 1).fit(feats)
    dist, _ = nn.kneighbors(feats)
    return dist[:, k]  # column 0 is the point itself


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Kynkäänniemi et al. 2019: precision = share of fakes inside the real manifold (union of
    k-NN balls around real points); recall = share of reals inside the fake manifold."""
    d = _pairwise(real, fake)
    r_real, r_fake = knn_radii(real, k), knn_radii(fake, k)
    precision = float((d <= r_real[:, None]).any(axis=0).mean())
    recall = float((d <= r_fake[None, :]).any(axis=1).mean())
    return precision, recall


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Naeem et al. 2020: density counts how many real k-NN balls hold each fake (/k); coverage is
    the share of real points whose ball holds at least one fake."""
    d = _pairwise(real, fake)
    inside = d <= knn_radii(real, k)[:, None]
    return float(inside.sum(axis=0).mean() / k), float(inside.any(axis=1).mean())


# ---------------------------------------------------------------- classes

def class_histogram(probs: np.ndarray) -> list[int]:
    return np.bincount(np.asarray(probs).argmax(axis=1), minlength=10).astype(int).tolist()


def classes_covered(hist: list[int], min_share: float = 0.02) -> int:
    """Classes that receive at least `min_share` of the samples (uniform is 10%): mode collapse
    shows as fewer than 10."""
    total = max(sum(hist), 1)
    return int(sum(c / total >= min_share for c in hist))


# ---------------------------------------------------------------- all together

def evaluate_features(real_feats, real_probs, fake_feats, fake_probs, k: int = 3, splits: int = 10) -> dict:
    """Every metric of a generated set against a real reference set.

    FID and the classifier score use every sample; the k-NN metrics compare equal-sized sets (the
    first min(N_real, N_fake) of each), since their values depend on the set sizes."""
    n = min(len(real_feats), len(fake_feats))
    cs, cs_std = classifier_score(fake_probs, splits)
    precision, recall = precision_recall(real_feats[:n], fake_feats[:n], k)
    density, coverage = density_coverage(real_feats[:n], fake_feats[:n], k)
    hist = class_histogram(fake_probs)
    return {"fid": fid(real_feats, fake_feats), "classifier_score": cs, "classifier_score_std": cs_std,
            "precision": precision, "recall": recall, "density": density, "coverage": coverage,
            "classes_covered": classes_covered(hist), "class_histogram": hist, "n_knn": n}


@dataclass
class RealReference:
    """Gaussian statistics of real held-out features, for a cheap FID during training."""
    mu: np.ndarray
    sigma: np.ndarray

    @classmethod
    def from_images(cls, evaluator, images_uint8: np.ndarray) -> "RealReference":
        from pipeline.evaluator import embed

        feats, _ = embed(evaluator, images_uint8)
        return cls(*gaussian_stats(feats))


def quick_fid(evaluator, reference: RealReference, images: torch.Tensor) -> float:
    """FID of float images in [-1, 1] (N,1,28,28) against the reference."""
    from pipeline.evaluator import embed

    uint8 = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0].numpy()
    feats, _ = embed(evaluator, uint8)
    return frechet_distance(*gaussian_stats(feats), reference.mu, reference.sigma)
