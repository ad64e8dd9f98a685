"""The work of DVC stage `sample` (entry point: stages/sample.py, whose docstring says what it does)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from pipeline import tracking
from pipeline.config import Params
from pipeline.fileio import atomic_dir
from pipeline.sampling import GENERATOR_FILE, generate_images, load_generator
from pipeline.runtime import resolve_runtime
from pipeline.visualize import attention_maps, grid, save_gif, save_png

log = logging.getLogger("sample")

OUT_DIR = Path("samples")


def main(p: Params) -> None:
    rt = resolve_runtime(p)
    generator = load_generator(GENERATOR_FILE, rt.device)
    run_id = tracking.current_run_id()
    with atomic_dir(OUT_DIR) as out:
        images = generate_images(generator, p.sample.n, p.sample.seed, rt)
        with open(out / "samples.npz", "wb") as f:
            np.savez_compressed(f, images=images)
        save_png(grid(images, p.sample.grid_rows), out / "grid.png")
        snaps = np.load("models/snapshots.npz")
        if len(snaps["images"]):
            frames = [grid(s, p.sample.grid_rows) for s in snaps["images"]]
            save_gif(frames, out / "training.gif", [f"step {s}" for s in snaps["steps"]])
        if generator.attention_layers():
            z = torch.randn(3, generator.cfg.z_dim, generator=torch.Generator().manual_seed(p.sample.seed))
            attention_maps(generator, z.to(rt.device), [(8, 14), (14, 14), (20, 10)], out / "attention.png")
        log.info("%d samples, grid and GIF in %s/", len(images), OUT_DIR)
    with tracking.run_logger(run_id, end_status="FINISHED") as logger:
        for name in ("grid.png", "training.gif", "attention.png"):
            if (OUT_DIR / name).exists():
                logger.artifact(OUT_DIR / name, "samples")
