"""Deterministic draws: the data order and the latent noise of step s are functions of (seed, s), so
a run resumed from a checkpoint at step s draws exactly what an uninterrupted run would draw."""
from __future__ import annotations

import torch

def step_generator(seed: int, step: int, stream: int, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step * 17 + stream) % (2**63 - 1))
    return g


def epoch_permutation(n: int, seed: int, epoch: int, device: str | torch.device = "cpu") -> torch.Tensor:
    return torch.randperm(n, generator=step_generator(seed, epoch, 1, device), device=device)


def batch_indices(n: int, batch_size: int, seed: int, draw: int, device: str | torch.device = "cpu",
                  perm: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of the `draw`-th batch: epochs are seeded permutations, so any draw is recomputable.
    Draws are made on `device` (on CUDA they differ from CPU draws but are just as repeatable)."""
    per_epoch = n // batch_size
    epoch, pos = divmod(draw, per_epoch)
    if perm is None:
        perm = epoch_permutation(n, seed, epoch, device)
    return perm[pos * batch_size:(pos + 1) * batch_size]


def latent(batch: int, z_dim: int, seed: int, draw: int, stream: int = 2,
           device: str | torch.device = "cpu") -> torch.Tensor:
    return torch.randn(batch, z_dim, generator=step_generator(seed, draw, stream, device), device=device)


def fixed_latent(n: int, z_dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.randn(n, z_dim, generator=g)
