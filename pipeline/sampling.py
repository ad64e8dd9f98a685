"""Loading a trained generator and drawing images from it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.errors import UserError
from pipeline.fileio import torch_load
from pipeline.models import Generator, ModelConfig
from pipeline.training import Runtime, fixed_latent, to_uint8


def load_generator(path: Path, device: torch.device | str = "cpu", ema: bool = True) -> Generator:
    """The trained generator in eval mode; the EMA weights when the run kept them."""
    if not Path(path).exists():
        raise UserError(f"{path} is missing: run the train stage first (`dvc repro train`)")
    state = torch_load(path)
    cfg = state["config"]
    cfg = ModelConfig(**{**cfg, "g_attention_at": tuple(cfg["g_attention_at"]),
                         "d_attention_at": tuple(cfg["d_attention_at"])})
    g = Generator(cfg)
    weights = state["generator_ema"] if ema and state.get("generator_ema") else state["generator"]
    g.load_state_dict(weights)
    return g.to(device, memory_format=torch.channels_last).eval()


@torch.no_grad()
def generate_images(generator: Generator, n: int, seed: int, rt: Runtime, batch: int = 500) -> np.ndarray:
    """n uint8 (28x28) images from the fixed latents of `seed` (the same for every run)."""
    z = fixed_latent(n, generator.cfg.z_dim, seed)
    out = []
    for i in range(0, n, batch):
        with torch.autocast(rt.device.type, dtype=torch.bfloat16, enabled=rt.precision == "bf16"):
            out.append(to_uint8(generator(z[i:i + batch].to(rt.device))))
    return np.concatenate(out)
