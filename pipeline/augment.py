"""Differentiable augmentation of the discriminator's inputs (DiffAugment, Zhao et al. 2020).

With a few thousand training images D memorises the real set and its feedback to G degrades; showing
D randomly translated and cut-out versions of both real and generated images (and letting G's
gradients flow through the same transforms) keeps it honest without changing what G learns to
produce: the augmentations are applied to D's inputs only, never to samples.

`train.augment` picks the policy: none | translation | translation_cutout. Random draws come from a
generator seeded by (seed, step, stream), so a resumed run draws exactly what it would have.
Images are in [-1, 1] with background -1: translation pads with background, cutout erases to it.
"""
from __future__ import annotations

import torch

POLICIES = ("none", "translation", "translation_cutout")
TRANSLATION = 0.125   # DiffAugment's default: up to 1/8 of the image size (4 pixels at 28x28)
CUTOUT = 0.5          # DiffAugment's default: a square of half the image size (14x14 at 28x28)
BACKGROUND = -1.0


def draw(n: int, policy: str, gen: torch.Generator, size: tuple[int, int] = (28, 28),
         device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Per-image random parameters for n images: translation offsets and cutout centres.
    Drawn for the global batch, so each DDP rank can take the rows of its own share."""
    if policy not in POLICIES:
        raise ValueError(f"unknown augmentation policy {policy!r}; allowed: {', '.join(POLICIES)}")
    h, w = size
    out: dict[str, torch.Tensor] = {}
    if policy == "none":
        return out
    sh, sw = int(h * TRANSLATION + 0.5), int(w * TRANSLATION + 0.5)
    out["dy"] = torch.randint(-sh, sh + 1, (n,), generator=gen, device=device)
    out["dx"] = torch.randint(-sw, sw + 1, (n,), generator=gen, device=device)
    if policy == "translation_cutout":
        ch, cw = int(h * CUTOUT + 0.5), int(w * CUTOUT + 0.5)
        out["cy"] = torch.randint(0, h + (1 - ch % 2), (n,), generator=gen, device=device)
        out["cx"] = torch.randint(0, w + (1 - cw % 2), (n,), generator=gen, device=device)
    return out


def select(params: dict[str, torch.Tensor], rows: torch.Tensor | slice) -> dict[str, torch.Tensor]:
    return {k: v[rows] for k, v in params.items()}


def translate(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Shifts image i by (dy[i], dx[i]) pixels (at most TRANSLATION of the size), filling with background."""
    b, c, h, w = x.shape
    sh, sw = int(h * TRANSLATION + 0.5), int(w * TRANSLATION + 0.5)
    dev = x.device
    padded = torch.nn.functional.pad(x, (sw, sw, sh, sh), value=BACKGROUND)
    rows = torch.arange(h, device=dev)[None, :, None] + sh - dy[:, None, None]   # (b, h, 1)
    cols = torch.arange(w, device=dev)[None, None, :] + sw - dx[:, None, None]   # (b, 1, w)
    batch = torch.arange(b, device=dev)[:, None, None]
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2)                    # (b, h, w, c) -> NCHW


def cutout(x: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
    """Erases a square of side CUTOUT * size centred at (cy[i], cx[i]) in image i (clipped at the edges)."""
    _, _, h, w = x.shape
    ch, cw = int(h * CUTOUT + 0.5), int(w * CUTOUT + 0.5)
    dev = x.device
    rows = torch.arange(h, device=dev)[None, None, :, None] - cy[:, None, None, None] + ch // 2
    cols = torch.arange(w, device=dev)[None, None, None, :] - cx[:, None, None, None] + cw // 2
    inside = (rows >= 0) & (rows < ch) & (cols >= 0) & (cols < cw)
    return torch.where(inside, torch.full((), BACKGROUND, dtype=x.dtype, device=dev), x)


def apply(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """The augmented batch: differentiable in x, so G's gradients flow through it. Images whose `keep`
    is true (adaptive augmentation: those not drawn for augmenting) pass unchanged."""
    out = x
    if "dy" in params:
        out = translate(out, params["dy"], params["dx"])
    if "cy" in params:
        out = cutout(out, params["cy"], params["cx"])
    if "keep" in params:
        out = torch.where(params["keep"][:, None, None, None], x, out)
    return out
