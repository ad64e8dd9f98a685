"""GPU memory bounds how many grid workers share one GPU (each is its own CUDA context)."""
from __future__ import annotations

import logging

from pipeline.config import Params
from pipeline.errors import UserError
from pipeline.grid.spec import GridSpec

log = logging.getLogger("grid")

# a bound per worker: its CUDA context, the compiled model and CUDA graphs' pools (measured on an H200,
# torch 2.11: 9 workers of the default model peaked at 11.8 GiB together, 1.3 GiB each)
GPU_GIB_PER_WORKER = 2.0


def wants_cuda(p: Params, spec: GridSpec) -> bool:
    device = spec.device or p.train.device
    if device == "cpu":
        return False
    import torch

    return torch.cuda.is_available()


def gpu_room(free_bytes: int) -> int:
    """How many grid workers fit in `free_bytes` of GPU memory."""
    return int(free_bytes / 2**30 // GPU_GIB_PER_WORKER)


def gpu_share(gpu_bytes: int) -> float:
    """The fraction of one GPU a Ray task asks for (`num_gpus`): as many runs share a GPU as its memory
    holds at GPU_GIB_PER_WORKER each (an H200's 139 GiB: 1/69; Ray packs tasks by these fractions)."""
    return 1.0 / max(1, gpu_room(gpu_bytes))


def check_gpu_room(jobs: int) -> None:
    """Refuses more workers than the GPU's free memory holds."""
    import torch

    free, _ = torch.cuda.mem_get_info()
    room = gpu_room(free)
    if jobs > room:
        raise UserError(f"--jobs {jobs}: the GPU has {free / 2**30:.1f} GiB free, room for {room} workers at "
                        f"~{GPU_GIB_PER_WORKER:.0f} GiB each; lower --jobs (ablation.jobs)")
    log.info("GPU %s: %.1f GiB free for %d workers", torch.cuda.get_device_name(), free / 2**30, jobs)
