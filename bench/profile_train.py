"""Where a training step's time goes: PyTorch's profiler over a few steps of the default model.

    python bench/profile_train.py                 # the default params (batch 32), 2 threads
    python bench/profile_train.py --batch 64 --steps 10 -S train.attention_kernel=sdpa
    python bench/profile_train.py --components    # ms a step by component (conv, attention, rest)
    # an AVX-512 machine acting as an AVX2 one:
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 SAGAN_KERNEL_TARGET=x86-64-v3 python bench/profile_train.py --components

Prints the top operators by self CPU time (the profile behind the README's speed notes), or with
`--components` the step's time split into convolutions, the attention kernel, batch norm, the
optimizer (Adam, zero_grad) and the rest (element-wise ops, copies, the loss, the EMA, Python),
each forward and backward, beside the unprofiled step time and images/s. Each operator's self time
goes to the component of its nearest enclosing operator that names one (a copy inside a convolution's
backward is convolution time). The profiler adds its own time to every operator, so the profiled
total is above the unprofiled one; compare shares, or runs of the same command.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import yaml  # noqa: E402

from pipeline import cpu  # noqa: E402
from pipeline.config import Params, with_override  # noqa: E402
from pipeline.runtime import resolve_runtime  # noqa: E402
from pipeline.trainer import Trainer  # noqa: E402

# component: substrings of an operator's name (lower case), first match wins, nearest operator first
COMPONENTS = (
    ("optimizer", ("optimizer.", "_fused_adam")),
    ("attention", ("attention",)),   # the project's kernel (_Attention) or PyTorch's SDPA
    ("conv", ("convolution", "conv2d", "conv_transpose")),
    ("batch_norm", ("batch_norm",)),
)
ORDER = [name for name, _ in COMPONENTS] + ["rest"]


def component_of(event) -> tuple[str, bool]:
    """(component, backward?) of a profiler event, from it and the operators enclosing it."""
    comp, backward, e = None, False, event
    while e is not None:
        name = e.name.lower()
        if name.startswith("autograd::engine::evaluate_function"):
            backward = True
        if comp is None:
            comp = next((c for c, keys in COMPONENTS if any(k in name for k in keys)), None)
        e = e.cpu_parent
    return comp or "rest", backward


def components(prof, steps: int) -> dict[tuple[str, bool], float]:
    """ms a step per (component, backward) from the events' self CPU time on the main thread."""
    out: dict[tuple[str, bool], float] = {}
    for e in prof.events():
        key = component_of(e)
        out[key] = out.get(key, 0.0) + e.self_cpu_time_total / 1000 / steps
    return out


def unprofiled_ms(trainer: Trainer, steps: int, reps: int = 5) -> float:
    """Median ms a step over `reps` blocks of `steps` steps."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        times.append((time.perf_counter() - t0) / steps * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=None, help="default: train.batch_size of the default params")
    ap.add_argument("--steps", type=int, default=10, help="profiled steps (after 3 warm-up steps)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--components", action="store_true",
                    help="ms a step by component (conv, attention, batch norm, optimizer, rest) instead of the operator table")
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
    plain = unprofiled_ms(trainer, args.steps) if args.components else None
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step()
        wall = (time.perf_counter() - t0) / args.steps * 1000
    info = cpu.describe()
    print(f"{info['cpu']}, {info['uarch']} ({info['effective_class']}; ATen {info['aten_isa']}, "
          f"oneDNN {info['onednn_isa']}), torch {torch.__version__}")
    print(f"precision {rt.precision}, attention {rt.attention_kernel} ({rt.attention_paths}), "
          f"batch {p.train.batch_size}, threads {args.threads}, {args.steps} steps")
    if not args.components:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
        return
    comp = components(prof, args.steps)
    total = sum(comp.values())
    print(f"\n{'component':12s} {'forward':>9s} {'backward':>9s} {'total':>9s}  share   (ms a step, profiled)")
    for name in ORDER:
        fwd, bwd = comp.get((name, False), 0.0), comp.get((name, True), 0.0)
        print(f"{name:12s} {fwd:9.1f} {bwd:9.1f} {fwd + bwd:9.1f}  {(fwd + bwd) / wall:5.1%}")
    print(f"{'outside ops':12s} {'':9s} {'':9s} {wall - total:9.1f}  {(wall - total) / wall:5.1%}"
          f"  (Python, the profiler: wall time in no operator)")
    print(f"{'profiled':12s} {'':9s} {'':9s} {wall:9.1f}")
    print(f"{'unprofiled':12s} {'':9s} {'':9s} {plain:9.1f}  = {p.train.batch_size / plain * 1000:.0f} img/s "
          f"(median of 5 x {args.steps} steps)")


if __name__ == "__main__":
    main()
