"""Where the time of one attention layer goes, forward + backward, part by part (issue 42).

    python bench/attention_split.py                      # G's 28x28 layer, batch 32, 1 thread
    python bench/attention_split.py --layer g14 --batch 64 --threads 2 --repeats 31

The layer (SelfAttention, the default model's channels) is split into its parts, each timed on its
own, forward and backward, on inputs of the shapes the layer gives it:
  proj       the fused f/g/h 1x1 conv (channels -> 3d)
  casts      what lies between the conv and the kernel and back: permute/reshape, the casts to and
             from float32 and the contiguous copies of q, k, v (current path), or none (bf16 path)
  kernel     the attention kernel itself
  v+resid    the v 1x1 conv (d -> channels) and x + gamma * v(ctx)
  layer      the whole layer, for comparison with the sum of the parts
for three paths: fp32 (train.precision fp32), bf16-casts (bf16 autocast, the float32 kernel between
casts: what ran before issue 42) and bf16 (bf16 autocast, the kernel's bf16 path). Repeats are
interleaved across paths; the figures are medians in ms. On a CPU without bf16 hardware (AVX2)
bf16 convolutions are slow: read the kernel and casts rows there.
"""
from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import torch

from pipeline import cpu, fast_attention
from pipeline.models import SelfAttention

LAYERS = {"g28": (32, 28), "g14": (64, 14), "d14": (32, 14)}  # (channels, resolution), params.yaml
PARTS = ("proj", "casts", "kernel", "v+resid", "layer")
PATHS = ("fp32", "bf16-casts", "bf16")


def fwd_bwd(fn, *leaves):
    """One forward and backward of fn on fresh leaves; returns seconds."""
    leaves = [t.detach().requires_grad_() for t in leaves]
    t0 = time.perf_counter()
    out = fn(*leaves)
    out = out if isinstance(out, tuple) else (out,)
    torch.autograd.backward(out, [torch.ones_like(o) for o in out])
    return time.perf_counter() - t0


def parts(layer: SelfAttention, path: str, b: int, res: int) -> dict:
    """path -> {part: zero-argument timer}."""
    bf16 = path != "fp32"
    dtype = torch.bfloat16 if bf16 else torch.float32
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else nullcontext
    d, n = layer.inner, res * res
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, layer.channels, res, res, generator=gen).to(dtype).contiguous(memory_format=torch.channels_last)
    fgh = torch.randn(b, 3 * d, res, res, generator=gen).to(dtype).contiguous(memory_format=torch.channels_last)
    ctx_dtype = torch.bfloat16 if path == "bf16" else torch.float32  # the kernel's output
    ctx = torch.randn(b, n, d, generator=gen).to(ctx_dtype)
    qkv = fgh.permute(0, 2, 3, 1).reshape(b, n, 3 * d)
    f, g, h = (u.float().contiguous() for u in qkv.split(d, -1))
    kern = fast_attention.kernel()

    def casts(y, c):
        """SelfAttention.forward between the conv and the kernel, and between the kernel and v."""
        t = y.permute(0, 2, 3, 1).reshape(b, n, 3 * d)
        back = c.reshape(b, res, res, d).permute(0, 3, 1, 2).to(dtype)
        if path == "bf16":
            return t.contiguous(), back  # views: nothing is copied or cast
        return (*(u.contiguous() for u in t.float().split(d, -1)), back)

    def timed(fn, *leaves):
        def run():
            with amp():
                return fwd_bwd(fn, *leaves)
        return run

    if path == "bf16":
        kernel_part = timed(lambda t: fast_attention.attention_bf16(t, kern), qkv.contiguous())
    else:
        kernel_part = timed(lambda *t: fast_attention.attention(*t, kern=kern), f, g, h)
    return {
        "proj": timed(lambda t: layer.fgh(t), x),
        "casts": timed(casts, fgh, ctx),
        "kernel": kernel_part,
        "v+resid": timed(lambda c, t: torch.addcmul(t, layer.gamma, layer.v(c)),
                         ctx.to(dtype).reshape(b, res, res, d).permute(0, 3, 1, 2), x),
        "layer": timed(layer, x),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layer", choices=LAYERS, default="g28")
    ap.add_argument("--batch", type=int, default=32, help="params.yaml train.batch_size")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=21)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fast_attention.set_mode("kernel")
    channels, res = LAYERS[args.layer]
    torch.manual_seed(0)
    layer = SelfAttention(channels, gamma_init=0.5)
    timers = {p: parts(layer, p, args.batch, res) for p in PATHS}
    real_supports = fast_attention.supports_bf16
    times = {(p, k): [] for p in PATHS for k in PARTS}
    for r in range(args.repeats + 1):
        for p in (PATHS if r % 2 == 0 else PATHS[::-1]):
            # bf16-casts: the model's path with the bf16 entry points switched off
            fast_attention.supports_bf16 = real_supports if p == "bf16" else (lambda t: False)
            for k in PARTS:
                t = timers[p][k]()
                if r:  # the first round warms up
                    times[p, k].append(t * 1e3)
    fast_attention.supports_bf16 = real_supports
    info = cpu.describe()
    kern = fast_attention.kernel()
    print(f"{info['cpu']}, {info['uarch']} ({info['effective_class']}), kernel vector width {kern.vector_width}, "
          f"{args.threads} thread(s); {args.layer}: B={args.batch}, N={res * res}, C={channels}, d={layer.inner}; "
          f"fwd+bwd ms, median of {args.repeats}")
    print(f"{'part':9s}" + "".join(f"{p:>12s}" for p in PATHS))
    for k in PARTS:
        print(f"{k:9s}" + "".join(f"{statistics.median(times[p, k]):12.2f}" for p in PATHS))


if __name__ == "__main__":
    main()
