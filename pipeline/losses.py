"""GAN losses on discriminator logits: hinge (SAGAN paper) and non-saturating BCE.

Each returns (d_loss, g_loss) builders; formulas:
  hinge  D: E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]      G: -E[D(G(z))]
  bce    D: E[softplus(-D(x))] + E[softplus(D(G(z)))]     G: E[softplus(-D(G(z)))]
(softplus(-l) is BCE-with-logits against label 1, softplus(l) against label 0.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    if kind == "bce":
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    raise ValueError(f"unknown loss {kind!r}")


def g_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return -fake_logits.mean()
    if kind == "bce":
        return F.softplus(-fake_logits).mean()
    raise ValueError(f"unknown loss {kind!r}")
