"""Interleaved A/B of the training step of two checkouts (e.g. main before and after a change).

    python bench/ab_step.py /path/to/before /path/to/after            # the default params, 2 threads
    python bench/ab_step.py BEFORE AFTER --rounds 15 --steps 5 -S train.precision=fp32
    # an AVX-512 machine acting as an AVX2 one: the variables reach both workers
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 SAGAN_KERNEL_TARGET=x86-64-v3 python bench/ab_step.py A B
    # one checkout, two settings: an attention cell's step against a `none` cell's (issue 42's ratio)
    python bench/ab_step.py . . -A attention.position=none

Each checkout runs in a worker process of its own (its `pipeline` package first on the path) that
builds the default model's Trainer on the same random data and warms it up; then the workers take
turns, one block of `--steps` steps at a time, never both at once, alternating which goes first.
Reports each side's median and best block (ms a step, images/s) and the median of the per-round
ratios: on a machine shared with other work, only ratios measured this way mean anything.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

WORKER = r"""
import json, sys, time
import numpy as np, torch, yaml
torch.set_num_threads(int(sys.argv[1]))
from pipeline import cpu
from pipeline.config import Params, with_override
from pipeline.runtime import resolve_runtime
from pipeline.trainer import Trainer
overrides = {k: yaml.safe_load(v) for k, v in json.loads(sys.argv[2]).items()}
p = with_override(Params(), {"train.device": "cpu", **overrides})
rt = resolve_runtime(p)
data = np.random.default_rng(0).integers(0, 256, (4096, 28, 28), dtype=np.uint8)
tr = Trainer(p, data, "ab", rt)
for _ in range(3):
    tr.train_step()
import pipeline
print(json.dumps({"ready": True, "pipeline": pipeline.__file__, "precision": rt.precision,
                  "attention": rt.attention_paths, "batch": p.train.batch_size, **cpu.describe()}), flush=True)
for line in sys.stdin:
    n = int(line)
    t0 = time.perf_counter()
    for _ in range(n):
        tr.train_step()
    print(json.dumps({"ms": (time.perf_counter() - t0) / n * 1000}), flush=True)
"""


def start(tree: Path, threads: int, overrides: dict) -> tuple[subprocess.Popen, dict]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(threads), json.dumps(overrides)], cwd=tree, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, json.loads(proc.stdout.readline())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--steps", type=int, default=5, help="steps a block")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("-S", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("-A", dest="after_overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="an override for the `after` side only")
    args = ap.parse_args()
    overrides = dict(o.split("=", 1) for o in args.overrides)
    after = {**overrides, **dict(o.split("=", 1) for o in args.after_overrides)}
    sides = {}
    for name, tree in (("before", args.before), ("after", args.after)):
        sides[name] = start(tree.resolve(), args.threads, after if name == "after" else overrides)
    info = sides["before"][1]
    print(f"{info['cpu']}, {info['uarch']} ({info['effective_class']}; ATen {info['aten_isa']}, oneDNN "
          f"{info['onednn_isa']}), {args.threads} threads, {info['precision']}, batch {info['batch']}")
    times: dict[str, list[float]] = {"before": [], "after": []}
    for r in range(args.rounds):
        for name in (("before", "after") if r % 2 == 0 else ("after", "before")):
            proc = sides[name][0]
            proc.stdin.write(f"{args.steps}\n")
            proc.stdin.flush()
            times[name].append(json.loads(proc.stdout.readline())["ms"])
    for proc, _ in sides.values():
        proc.stdin.close()
        proc.wait()
    batch = info["batch"]
    for name in ("before", "after"):
        t = times[name]
        print(f"{name:6s} {sides[name][1]['pipeline']}: median {statistics.median(t):6.1f} ms a step "
              f"({batch / statistics.median(t) * 1000:5.0f} img/s), best {min(t):6.1f} ms ({batch / min(t) * 1000:5.0f} img/s)")
    ratios = [b / a for b, a in zip(times["before"], times["after"])]
    print(f"speedup after/before: median of {args.rounds} rounds {statistics.median(ratios):.3f} "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}), best blocks {min(times['before']) / min(times['after']):.3f}")


if __name__ == "__main__":
    main()
