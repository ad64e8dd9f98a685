"""Pictures of a run: the sample grid, the training GIF, and attention maps over digits."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.fileio import atomic_path


def grid(images: np.ndarray, rows: int, pad: int = 2, scale: int = 2) -> np.ndarray:
    """uint8 (N,28,28) -> one uint8 image of rows x rows tiles (white on black, like MNIST)."""
    n = rows * rows
    tiles = np.zeros((n, 28, 28), np.uint8)
    tiles[: min(n, len(images))] = images[:n]
    h = rows * 28 + (rows + 1) * pad
    canvas = np.full((h, h), 64, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, rows)
        y, x = pad + r * (28 + pad), pad + c * (28 + pad)
        canvas[y:y + 28, x:x + 28] = t
    return canvas.repeat(scale, 0).repeat(scale, 1)


def save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def save_gif(frames: list[np.ndarray], path: Path, labels: list[str] | None = None, ms: int = 150) -> None:
    from PIL import Image, ImageDraw

    images = []
    for i, f in enumerate(frames):
        im = Image.fromarray(f).convert("L")
        if labels:
            ImageDraw.Draw(im).text((4, 2), labels[i], fill=255)
        images.append(im)
    with atomic_path(path, suffix=".gif") as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=ms, loop=0)


@torch.no_grad()
def attention_maps(generator, z: torch.Tensor, queries: list[tuple[int, int]], path: Path) -> list[str]:
    """For each sample and attention layer, where a few query pixels look (as in the SAGAN paper's
    figure): the attention weights of each query drawn over the digit. Returns the layer names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = generator.attention_layers()
    captured: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(module, inputs, output):
            captured[name] = module.attention_map(inputs[0]).float().cpu()
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    try:
        images = generator(z).float().cpu()[:, 0]
    finally:
        for h in handles:
            h.remove()
    names = list(layers)
    n_samples, n_cols = len(z), 1 + len(names) * len(queries)
    fig, axes = plt.subplots(n_samples, n_cols, figsize=(1.6 * n_cols, 1.7 * n_samples), squeeze=False)
    colors = ["red", "lime", "cyan", "yellow"]
    for s in range(n_samples):
        digit = images[s].numpy()
        axes[s, 0].imshow(digit, cmap="gray", vmin=-1, vmax=1)
        axes[s, 0].set_title("sample" if s == 0 else "", fontsize=8)
        for qi, (qy, qx) in enumerate(queries):
            axes[s, 0].scatter([qx], [qy], c=colors[qi % 4], s=12)
        col = 1
        for name in names:
            amap = captured[name][s]
            side = int(round(amap.shape[0] ** 0.5))
            for qi, (qy, qx) in enumerate(queries):
                ry, rx = qy * side // 28, qx * side // 28
                weights = amap[ry * side + rx].reshape(side, side).numpy()
                ax = axes[s, col]
                ax.imshow(digit, cmap="gray", vmin=-1, vmax=1, extent=(0, 28, 28, 0))
                ax.imshow(weights, cmap="inferno", alpha=0.6, extent=(0, 28, 28, 0))
                ax.scatter([qx], [qy], c=colors[qi % 4], s=12)
                if s == 0:
                    ax.set_title(f"{name} q{qi}", fontsize=8)
                col += 1
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return names
