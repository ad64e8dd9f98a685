"""Where and how a training step runs: device, precision, compilation and the CPU attention path,
chosen once per process from params and the machine, and recorded with every run."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from pipeline import cpu, fast_attention
from pipeline.config import Params
from pipeline.errors import UserError
from pipeline.models import ModelConfig, attention_shapes

@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str        # fp32 | bf16
    compile: bool
    rank: int = 0
    world_size: int = 1
    compile_mode: str | None = None   # torch.compile mode; None is its default
    attention_kernel: str = "sdpa"    # what CPU attention runs on: native (pipeline/fast_attention.py) | sdpa | mixed
    attention_paths: str = ""         # per layer, e.g. "d14=native g14=native g28=native" (auto decides per shape)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def autocast_dtype(self):
        return torch.bfloat16 if self.precision == "bf16" else None


def resolve_runtime(p: Params) -> Runtime:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    want = p.train.device
    if want == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device = cuda but no CUDA device is visible; use train.device=auto or cpu")
    use_cuda = want == "cuda" or (want == "auto" and torch.cuda.is_available())
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if p.train.precision == "auto":
        fast_bf16 = (torch.cuda.is_bf16_supported() if use_cuda else cpu.has_fast_bf16())
        precision = "bf16" if fast_bf16 else "fp32"
    else:
        precision = p.train.precision
    compile_ = {"true": True, "false": False, "auto": use_cuda}[p.train.compile]
    # On one GPU this model is launch-bound (~21 ms of CPU work per step for ~3 ms of GPU work at
    # batch 256): CUDA graphs ("reduce-overhead") remove that. Not with DDP, whose hooks break capture.
    mode = "reduce-overhead" if compile_ and use_cuda and world_size == 1 else None
    fast_attention.set_mode(p.train.attention_kernel)
    kernel, paths = "sdpa", ""
    if not use_cuda:
        kernel, paths = attention_plan(p)
    return Runtime(device, precision, compile_, rank, world_size, mode, kernel, paths)


def attention_plan(p: Params) -> tuple[str, str]:
    """What each attention layer of a training step runs on at the current thread count (with
    `auto`, timed once per machine and shape): native, sdpa or mixed, and the per-layer detail."""
    cfg = ModelConfig.from_params(p)
    paths = {name: {fast_attention.path_for(*shape, grad=True) for shape in shapes}
             for name, shapes in attention_shapes(cfg, p.train.batch_size).items()}
    used = set().union(*paths.values()) if paths else {fast_attention.kernel_name()}
    summary = used.pop() if len(used) == 1 else "mixed"
    return summary, " ".join(f"{name}={'+'.join(sorted(v))}" for name, v in sorted(paths.items()))
