"""The trained generator's file (written by the train stage, read by sample and the tests) and drawing
images from it."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from pipeline.errors import UserError
from pipeline.draws import fixed_latent
from pipeline.fileio import torch_load, torch_save
from pipeline.models import Generator, ModelConfig
from pipeline.runtime import Runtime

GENERATOR_FILE = Path("models/generator.pt")  # the train stage's output


@contextmanager
def in_eval_mode(net: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """net in eval mode (batch norm on its running statistics, as the sample stage loads a generator),
    put back as it was afterwards: G itself trains in train mode when there is no EMA."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] floats (N,1,28,28) -> uint8 (N,28,28)."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x[:, 0].cpu().numpy()


def save_generator(path: Path, generator: Generator, generator_ema: Generator | None, step: int) -> None:
    """The generator's weights (and its EMA's), its architecture and its step: what `load_generator`
    reads; tensors and plain values only, so it loads with weights_only=True."""
    cfg = generator.cfg
    torch_save({"generator": generator.state_dict(),
                "generator_ema": generator_ema.state_dict() if generator_ema is not None else None,
                "config": cfg.__dict__ | {"g_attention_at": list(cfg.g_attention_at),
                                          "d_attention_at": list(cfg.d_attention_at)},
                "step": step}, path)


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
