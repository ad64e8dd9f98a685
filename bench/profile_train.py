"""Where a training step's time goes: PyTorch's profiler over a few steps of the default model.

    python bench/profile_train.py                 # the default params (batch 32), 2 threads
    python bench/profile_train.py --batch 64 --steps 10 -S train.attention_kernel=sdpa

Prints the top operators by self CPU time (the profile behind the README's speed notes).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import yaml  # noqa: E402

from pipeline.config import Params, with_override  # noqa: E402
from pipeline.runtime import resolve_runtime  # noqa: E402
from pipeline.trainer import Trainer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=None, help="default: train.batch_size of the default params")
    ap.add_argument("--steps", type=int, default=10, help="profiled steps (after 3 warm-up steps)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("-S", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a params override, as with dvc exp run -S (repeatable)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    overrides = dict(o.split("=", 1) for o in args.overrides)
    overrides = {k: yaml.safe_load(v) for k, v in overrides.items()}
    if args.batch:
        overrides["train.batch_size"] = args.batch
    p = with_override(Params(), {"train.device": "cpu", **overrides})
    rt = resolve_runtime(p)
    data = np.random.default_rng(0).integers(0, 256, (4096, 28, 28), dtype=np.uint8)
    trainer = Trainer(p, data, "profile", rt)
    for _ in range(3):
        trainer.train_step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            trainer.train_step()
    print(f"precision {rt.precision}, attention {rt.attention_kernel} ({rt.attention_paths}), "
          f"batch {p.train.batch_size}, threads {args.threads}, {args.steps} steps")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))


if __name__ == "__main__":
    main()
