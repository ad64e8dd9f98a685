"""FID: the Fréchet distance between Gaussians fitted to the MNIST evaluator's penultimate features
(not Inception's), so values are comparable across runs of this project only; and the cheap FID
against precomputed real statistics that training logs."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from threadpoolctl import threadpool_limits


def _one_blas_thread():
    """numpy's and scipy's BLAS held to one thread: these matrices are 128 x 128, and a multithreaded
    OpenBLAS beside other busy processes (a grid's workers, test workers) spins: 10 square roots took 9 s
    of CPU instead of 0.06 s on 2 busy cores (docs/experiments.md, 2026-12-02)."""
    return threadpool_limits(limits=1, user_api="blas")

def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):

        ||mu1 - mu2||^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr(sqrt(sigma1 sigma2))

    computed as pytorch-fid does:
    - sqrt(sigma1 sigma2) by scipy.linalg.sqrtm (float64);
    - if that root is not finite (near-singular product), eps * I is added to both covariances
      and the root is taken again;
    - numerical error can leave an imaginary part: if any diagonal entry's imaginary part exceeds
      1e-3 in absolute value a ValueError is raised (the inputs are broken), otherwise the real
      part is kept.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"shapes do not match: mu {mu1.shape}, {mu2.shape}; sigma {sigma1.shape}, {sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings(), _one_blas_thread():  # "matrix is singular": handled below, as pytorch-fid does
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm(sigma1 sigma2)")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, N-1) covariance of features (N, D), float64."""
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or len(feats) < 2:
        raise ValueError(f"need at least 2 feature rows (N, D), got shape {feats.shape}")
    with _one_blas_thread():
        return feats.mean(axis=0), np.cov(feats, rowvar=False)


def fid_standard_error(real_stats: tuple[np.ndarray, np.ndarray], fake_feats: np.ndarray) -> float:
    """The sampling standard error of FID over re-draws of the generated set (the reference held fixed),
    from one draw, by the delta method: FID's first-order change is the mean over the samples of its
    influence function

        phi(x) = 2 (mu_g - mu_r)·(x - mu_g) + (x - mu_g)ᵀ A (x - mu_g),
        A = I - Σr^½ (Σr^½ Σg Σr^½)^-½ Σr^½   (the gradient of FID in Σg),

    so SE = SD(phi) / √N. It grows with the distance between the two distributions (at FID 0, phi is 0
    and only the ~1/N second-order term is left): a generator at FID ~10 moves by ~0.8 at N = 10,000
    in these features (bench/fid_noise.py checks it against repeated draws, docs/grid.md)."""
    mu_r, sigma_r = real_stats
    x = np.asarray(fake_feats, np.float64)
    mu_g, sigma_g = gaussian_stats(x)
    with warnings.catch_warnings(), _one_blas_thread():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        r_half = np.real(scipy.linalg.sqrtm(sigma_r))
        inner = np.real(scipy.linalg.sqrtm(r_half @ sigma_g @ r_half))
        a = np.eye(len(mu_r)) - r_half @ np.linalg.pinv(inner, hermitian=True) @ r_half
        a = (a + a.T) / 2
        xc = x - mu_g
        phi = 2 * xc @ (mu_g - mu_r) + np.einsum("ij,jk,ik->i", xc, a, xc)
    return float(phi.std(ddof=1) / np.sqrt(len(x)))


def fid(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID between two feature sets (N, D): Gaussian statistics of each, then `frechet_distance`."""
    return frechet_distance(*gaussian_stats(feats_a), *gaussian_stats(feats_b))


@dataclass
class RealReference:
    """Gaussian statistics of real held-out features, computed once, for a cheap FID during training."""
    mu: np.ndarray
    sigma: np.ndarray

    @classmethod
    def from_features(cls, feats: np.ndarray) -> "RealReference":
        return cls(*gaussian_stats(feats))

    @classmethod
    def from_images(cls, evaluator, images_uint8: np.ndarray) -> "RealReference":
        from pipeline.evaluator import embed

        return cls.from_features(embed(evaluator, images_uint8)[0])


def quick_fid(evaluator, reference: RealReference, images: torch.Tensor) -> float:
    """FID of generated float images (N,1,28,28) in [-1, 1] against the reference statistics.

    The images are quantised to uint8 levels first, as the sample stage stores them, so the value
    is the one `evaluate` would give for the same images (up to sample size)."""
    from pipeline.evaluator import embed_float

    x = images.detach().float().cpu().clamp(-1, 1)
    x = ((x + 1) * 127.5).round().div(127.5).sub(1)
    feats, _ = embed_float(evaluator, x)
    return frechet_distance(*gaussian_stats(feats), reference.mu, reference.sigma)
