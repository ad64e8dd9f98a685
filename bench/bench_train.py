"""Training and sampling throughput: the project's default path against a naive PyTorch port.

    python bench/bench_train.py --quick      # ~1-2 minutes
    python bench/bench_train.py              # more iterations, steadier figures
    # an AVX-512/AMX machine acting as an AVX2 one (PyTorch and the kernel held to AVX2):
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 SAGAN_KERNEL_TARGET=x86-64-v3 python bench/bench_train.py --quick

All run in this process on the same random data with the same thread count. A training iteration
is one D step and one G step at batch 64; images/s = batch / iteration time. Run on an idle machine.
The speedup compares the same networks: the project's path runs the tutorial's discriminator
(`model.d_channels=16`, `model.d_extra_convs=0`) like the naive port, once per CPU attention path
(the project's kernel, PyTorch's SDPA, and `auto`, which picks per shape); `default_train_images_per_s`
is the shipped default model (a wider, deeper D) on `auto`. The header names the CPU, its class and
the instruction sets PyTorch (ATen), oneDNN and the kernel were built for.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from naive_sagan import NaiveAttention, NaiveGenerator, NaiveTrainer  # noqa: E402

from pipeline import cpu, fast_attention  # noqa: E402
from pipeline.config import Params, with_override  # noqa: E402
from pipeline.models import SelfAttention  # noqa: E402
from pipeline.sampling import generate_images  # noqa: E402
from pipeline.runtime import resolve_runtime  # noqa: E402
from pipeline.trainer import Trainer  # noqa: E402


def timed(fn, iters: int, warmup: int) -> float:
    """Seconds per call, after warm-up."""
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def attention_equivalence() -> float:
    """Max abs difference between the project's attention and the naive one with the same weights."""
    torch.manual_seed(0)
    ours, ref = SelfAttention(32, gamma_init=0.5), NaiveAttention(32, gamma_init=0.5)
    d = ours.inner
    with torch.no_grad():
        w, b = ours.fgh.weight, ours.fgh.bias
        for i, conv in enumerate((ref.f, ref.g, ref.h)):
            conv.weight.copy_(w[i * d:(i + 1) * d])
            conv.bias.copy_(b[i * d:(i + 1) * d])
        ref.v.weight.copy_(ours.v.weight)
    x = torch.randn(8, 32, 28, 28)
    return float((ours(x.contiguous(memory_format=torch.channels_last)) - ref(x)).abs().max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--compile", default="auto", choices=["auto", "true", "false"])
    ap.add_argument("--compile-mode", default=None,
                    help="torch.compile mode to try (default, reduce-overhead, max-autotune-no-cudagraphs)")
    ap.add_argument("--attention-kernel", default="all", choices=["all", "auto", "kernel", "sdpa"],
                    help="which CPU attention paths to time (default: all three; the speedup is auto's)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    iters, warm, rounds = (6, 2, 3) if args.quick else (15, 3, 4)
    data = np.random.default_rng(0).integers(0, 256, (4096, 28, 28), dtype=np.uint8)
    results: dict[str, object] = {"threads": args.threads, "batch": args.batch, "torch": torch.__version__,
                                  **{f"cpu.{k}": v for k, v in cpu.describe().items()}}
    kern = fast_attention.kernel()
    results["kernel.target"] = f"{kern.target} ({kern.vector_width} floats a vector)" if kern else "unavailable"

    paths = ["kernel", "sdpa", "auto"] if args.attention_kernel == "all" else [args.attention_kernel]
    if kern is None:
        paths = [m for m in paths if m != "kernel"]
    runtime_keys = {"train.batch_size": args.batch, "train.precision": args.precision,
                    "train.device": args.device, "train.compile": args.compile,
                    "train.attention_kernel": paths[-1]}
    p = with_override(Params(), {**runtime_keys, "model.d_channels": 16, "model.d_extra_convs": 0})
    rt = resolve_runtime(p)
    if args.compile_mode:
        rt = dataclasses.replace(rt, compile_mode=args.compile_mode)
    results["runtime"] = {"device": str(rt.device), "precision": rt.precision, "compile": rt.compile,
                          "compile_mode": rt.compile_mode, "attention_kernel": rt.attention_kernel,
                          "attention_paths": rt.attention_paths}
    trainer = Trainer(p, data, "bench", rt)

    def synced_step(tr: Trainer):
        def step():
            out = tr.train_step()
            if rt.device.type == "cuda":
                torch.cuda.synchronize()
            return out
        return step

    per_path = {path: float("inf") for path in paths}
    for _ in range(rounds):  # interleaved, best of the rounds: no path gains from running later
        for path in paths:  # the last one (auto, by default) stays set for the rest
            fast_attention.set_mode(path)
            per_path[path] = min(per_path[path], timed(synced_step(trainer), iters, warm))
    for path, t in per_path.items():
        results[f"train_images_per_s.{path}"] = args.batch / t
    t_project = per_path[paths[-1]]
    results["train_images_per_s"] = args.batch / t_project
    default = Trainer(with_override(Params(), runtime_keys), data, "bench", rt)
    results["default_train_images_per_s"] = args.batch / timed(synced_step(default), iters, warm)

    if rt.device.type == "cpu":
        naive = NaiveTrainer(torch.from_numpy(data).float().div(127.5).sub(1).unsqueeze(1), args.batch)
        t_naive = timed(naive.train_step, max(iters // 2, 3), 2)
        results["naive_train_images_per_s"] = args.batch / t_naive
        results["train_speedup"] = t_naive / t_project
        for path, t in per_path.items():
            results[f"train_speedup.{path}"] = t_naive / t

        n = 2000 if args.quick else 10000
        g = NaiveGenerator().eval()
        t0 = time.perf_counter()
        with torch.no_grad():
            for i in range(0, n, 500):
                g(torch.randn(500, 100))
        results["naive_sample_images_per_s"] = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        generate_images(trainer.sampler, n, 1234, rt)
        results["sample_images_per_s"] = n / (time.perf_counter() - t0)
        results["sample_speedup"] = results["sample_images_per_s"] / results["naive_sample_images_per_s"]
        results["attention_max_abs_diff_fp32"] = attention_equivalence()

    for k, v in results.items():
        print(f"{k:32s} {v:.4g}" if isinstance(v, float) else f"{k:32s} {v}")
    if "train_speedup" in results:
        print(f"\n{results['cpu.cpu']} ({results['cpu.effective_class']}; ATen {results['cpu.aten_isa']}, "
              f"oneDNN {results['cpu.onednn_isa']}, kernel {results['kernel.target']}), "
              f"{args.threads} threads, {rt.precision}:")
        for path, t in per_path.items():
            print(f"  training, attention {path:6s}: {args.batch / t:6.0f} img/s = "
                  f"{results[f'train_speedup.{path}']:.2f}x naive ({results['naive_train_images_per_s']:.0f} img/s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
