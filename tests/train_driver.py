"""Runs the Trainer on a small, fixed data set; used by the resume-after-kill test as a subprocess.

usage: python tests/train_driver.py CHECKPOINT OUT [SLEEP_PER_STEP]
"""
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline.config import Params, with_override  # noqa: E402
from pipeline.runtime import resolve_runtime  # noqa: E402
from pipeline.trainer import Trainer  # noqa: E402

SMALL = {"train.steps": 12, "train.batch_size": 16, "train.checkpoint_every": 3, "train.log_every": 3,
         "train.snapshot_every": 4, "train.ema_start": 2, "train.lr_decay": "linear", "train.precision": "fp32",
         "train.eval_every": 0, "train.augment": "translation_cutout", "sample.grid_rows": 2}


def small_params(**extra) -> Params:
    return with_override(Params(), {**SMALL, **extra})


def small_data(n: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def make_trainer(checkpoint: Path | None, **extra) -> Trainer:
    torch.set_num_threads(1)
    p = small_params(**extra)
    return Trainer(p, small_data(), "sha-of-small-data", resolve_runtime(p), checkpoint_path=checkpoint)


# learning rates for with_plain_sgd: large enough that weights move far beyond rounding in two steps
SGD_LRS = {"train.lr_g": 0.05, "train.lr_d": 0.05}


def with_plain_sgd(t: Trainer) -> Trainer:
    """Swaps Adam for SGD. Adam's first steps move every weight by about lr whatever the size of its
    gradient, so a weight whose gradient is at rounding level moves by +-lr depending on summation
    order; SGD moves it in proportion to its gradient, which makes "same gradients" checkable."""
    t.opt_g = torch.optim.SGD(t.G.parameters(), lr=t.p.train.lr_g)
    t.opt_d = torch.optim.SGD(t.D.parameters(), lr=t.p.train.lr_d)
    return t


if __name__ == "__main__":
    ckpt, out = Path(sys.argv[1]), Path(sys.argv[2])
    delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    t = make_trainer(ckpt)
    t.resume()
    if delay:
        orig = t.train_step

        def slow_step():
            time.sleep(delay)
            return orig()

        t.train_step = slow_step
    t.run(progress=False)
    torch.save({"G": t.G.state_dict(), "D": t.D.state_dict(), "G_ema": t.G_ema.state_dict(),
                "history": t.history}, out)
