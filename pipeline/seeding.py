"""One seed drives Python, NumPy and torch; deterministic kernels on CPU."""
from __future__ import annotations

import os
import random
import sys

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        deterministic_algorithms()
        # that mode also fills every new tensor with NaN (a debugging aid against reading
        # uninitialised memory): 8 ms of a 77 ms CPU training step, and no effect on results
        torch.utils.deterministic.fill_uninitialized_memory = False
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def deterministic_algorithms() -> None:
    """torch.use_deterministic_algorithms(True, warn_only=True), less its import of the inductor compiler
    (to set the compiler's own flag): 2.1 s of every stage process's start on Zen 3, for a compiler that
    CPU runs do not use. Once the compiler is loaded (train.compile), the public call sets both flags."""
    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch._C._set_deterministic_algorithms(True, warn_only=True)
