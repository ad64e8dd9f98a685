"""The project's CPU attention kernel: exact softmax(q k^T) v for SAGAN's small head sizes.

PyTorch's CPU flash-attention kernel is built for head sizes of 64 and more; here the head size is
channels/8 (4 at 28x28), so it spends its time in tiny GEMM calls, and the 28x28 attention was 60%
of a training step. `csrc/attention.cpp` runs each image in one pass over the keys per pair of
query rows, one hardware vector of keys at a time (16 with AVX-512, 8 with AVX2), with denormals
flushed (SDPA's backward slows down 8x on them). bench/bench_attention.py times it against SDPA.

The C++ source is compiled on first use with the system compiler (`g++ -O3 -march=<target>
-fopenmp`, about 3 s) into a cache folder ($SAGAN_CACHE, else ~/.cache/sagan-pipeline), keyed by the
source, the flags and the CPU, and loaded with ctypes: no PyTorch headers, so no build step at
install time. It links OpenMP by soname and so shares the thread pool PyTorch has loaded. Where no
compiler is found or the build fails, `available()` is False and the model uses PyTorch's SDPA
(same math, slower), with a warning. Each image runs start to finish on one thread with a fixed
summation order, so outputs and gradients are bit-identical for any thread count.

The build target is $SAGAN_KERNEL_TARGET: `native` (default: this CPU's full instruction set),
`x86-64-v3` (AVX2 + FMA: what an AVX2-only CPU gets; run on an AVX-512 machine to develop for one)
or `portable` (the compiler's baseline: SSE2 on x86-64). $SAGAN_KERNEL_CFLAGS adds compiler flags.

`train.attention_kernel=auto` uses the kernel only where it is faster: the first time a shape
(positions, head size, batch, threads) is seen, both paths are timed on it, forward and backward,
and the choice is cached beside the build (`<build>.choices.json`), so it is made once per
machine, build and shape, and runs on one machine stay on one path.

bf16 (issue 42): under bf16 autocast the model passes the fused f/g/h conv's bf16 output, (B, N, 3d),
straight to the kernel's bf16 entry points (`attention_bf16`), which read q, k, v as its column
slices, compute in float32, and write bf16 output and a bf16 (B, N, 3d) gradient (rounded as torch's
`.to(torch.bfloat16)`): no fp32 casts, permute copies or concatenation around the kernel. Inside,
the bf16 path differs from the float32 one only in a cheaper exp (relative error 8e-5, 25x below
bf16's rounding); `SAGAN_KERNEL_CFLAGS=-DSAGAN_BF16_ROUND=1` (or 2) also rounds P (and dS) to bf16
as the products' inputs, the numerics of AVX512-BF16/AMX dot products (off: 8-18% slower on AVX2,
and rounded dS makes dq's error 2-2.5x the current path's; see attention.cpp).
tests/test_attention_bf16.py bounds its error against float64. It follows the float32 shape's
choice (`path_for`): it does the float32 kernel's work without its casts, so where the float32
kernel beats SDPA it beats SDPA plus the casts too; no separate timing. The float32 path is
unchanged, bit for bit.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "attention.cpp"
HEAD_SIZES = (1, 2, 4, 8, 16)
BASE_FLAGS = ["-O3", "-std=c++17", "-fopenmp", "-shared", "-fPIC"]
TARGETS = {"native": ["-march=native"], "x86-64-v3": ["-march=x86-64-v3"], "portable": []}
MODES = ("auto", "kernel", "sdpa")
# the kernel is kept unless SDPA is faster by more than this: a near tie must not flip between runs
TIE_MARGIN = 0.03
TIMING_BATCH = 64  # both paths scale linearly in the batch: larger batches are timed on this many

_lock = threading.Lock()
_mode = "auto"


def cache_dir() -> Path:
    return Path(os.environ.get("SAGAN_CACHE") or Path.home() / ".cache" / "sagan-pipeline")


def target() -> str:
    name = os.environ.get("SAGAN_KERNEL_TARGET", "native") or "native"
    if name not in TARGETS:
        raise ValueError(f"SAGAN_KERNEL_TARGET = {name!r}; allowed: {', '.join(TARGETS)}")
    return name


def extra_flags() -> list[str]:
    return shlex.split(os.environ.get("SAGAN_KERNEL_CFLAGS", ""))


def _cpu_id() -> str:
    """What -march=native compiles for: the CPU model and its feature flags."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags"))][:2]
        return "\n".join(lines)
    except OSError:
        return platform.processor() or platform.machine()


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


@dataclass
class Kernel:
    """One build of the kernel, loaded, with the choices `auto` made for it."""
    target: str
    flags: list[str]
    path: Path
    lib: ctypes.CDLL
    vector_width: int
    choices: dict[str, str] = field(default_factory=dict)

    @property
    def choices_path(self) -> Path:
        return self.path.with_suffix(".choices.json")

    def run_forward(self, q, k, v, out, lse) -> None:
        b, n, d = q.shape
        self._call(self.lib.sagan_attention_forward, n, d, b, q, k, v, out, lse)

    def run_backward(self, q, k, v, out, grad_out, lse, dq, dk, dv) -> None:
        b, n, d = q.shape
        self._call(self.lib.sagan_attention_backward, n, d, b, q, k, v, out, grad_out, lse, dq, dk, dv)

    # bf16: qkv is one contiguous (B, N, 3d) bf16 tensor; q, k, v are its thirds (rows 3d apart)
    def run_forward_bf16(self, qkv, out, out32, lse) -> None:
        b, n, d3 = qkv.shape
        d, (q, k, v) = d3 // 3, self._thirds(qkv)
        self._call(self.lib.sagan_attention_forward_bf16, n, d, b, d3, q, k, v, out, out32, lse)

    def run_backward_bf16(self, qkv, out32, grad_out, lse, dqkv) -> None:
        b, n, d3 = qkv.shape
        d = d3 // 3
        self._call(self.lib.sagan_attention_backward_bf16, n, d, b, d3, *self._thirds(qkv), out32, grad_out, lse,
                   *self._thirds(dqkv))

    @staticmethod
    def _thirds(t: torch.Tensor) -> list[int]:
        d = t.shape[-1] // 3
        return [t.data_ptr() + i * d * t.element_size() for i in range(3)]

    @staticmethod
    def _call(fn, n: int, d: int, batch: int, *args) -> None:
        """Calls fn on the whole batch; it splits the batch over PyTorch's threads (its OpenMP pool)."""
        threads = max(1, min(torch.get_num_threads(), batch))
        if fn(n, d, batch, threads, *[a.data_ptr() if isinstance(a, torch.Tensor) else a for a in args]) != 0:
            raise RuntimeError(f"CPU attention kernel does not support head size {d}")


def build(target_name: str = "native", extra: list[str] | tuple[str, ...] = ()) -> Kernel:
    """Compiles (once per machine, source and flags) and loads the kernel for `target_name`."""
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (install g++ or set CXX)")
    flags = [*BASE_FLAGS, *TARGETS[target_name], *extra]
    src = SOURCE.read_bytes()
    key = hashlib.sha256(src + " ".join([cxx, *flags]).encode() + _cpu_id().encode()).hexdigest()[:16]
    lib_path = cache_dir() / f"sagan_attention_{key}.so"
    if not lib_path.exists():
        lib_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=lib_path.parent, suffix=".so.tmp")
        os.close(fd)
        try:
            log.info("building the CPU attention kernel (%s, target %s, once per machine) into %s",
                     cxx, target_name, lib_path)
            # two units of the one source: the float32 code alone (its machine code as before the bf16
            # path existed), and the bf16 path, SAGAN_BF16_TU defined (read from stdin)
            bf16_unit = f'#define SAGAN_BF16_TU\n#include "{SOURCE.resolve()}"\n'
            res = subprocess.run([cxx, *flags, "-o", tmp, str(SOURCE), "-x", "c++", "-"], input=bf16_unit,
                                 capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(f"{cxx} failed: {res.stderr.strip()[-500:]}")
            os.replace(tmp, lib_path)  # atomic: concurrent builders (DVC queue, torchrun) are safe
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(lib_path))
    ptr, i = ctypes.c_void_p, ctypes.c_int
    lib.sagan_attention_forward.argtypes = [i, i, i, i] + [ptr] * 5
    lib.sagan_attention_backward.argtypes = [i, i, i, i] + [ptr] * 9
    lib.sagan_attention_forward.restype = lib.sagan_attention_backward.restype = i
    lib.sagan_attention_forward_bf16.argtypes = [i, i, i, i, i] + [ptr] * 6
    lib.sagan_attention_backward_bf16.argtypes = [i, i, i, i, i] + [ptr] * 9
    lib.sagan_attention_forward_bf16.restype = lib.sagan_attention_backward_bf16.restype = i
    lib.sagan_attention_vector_width.restype = i
    kernel = Kernel(target_name, flags, lib_path, lib, lib.sagan_attention_vector_width())
    try:
        kernel.choices = json.loads(kernel.choices_path.read_text())
    except (OSError, ValueError):
        kernel.choices = {}
    return kernel


_kernel: Kernel | None = None
_error: str | None = None


def _default_kernel() -> Kernel | None:
    """The process's build ($SAGAN_KERNEL_TARGET, $SAGAN_KERNEL_CFLAGS), built on first use."""
    global _kernel, _error
    if _kernel is None and _error is None:
        with _lock:
            if _kernel is None and _error is None:
                try:
                    _kernel = build(target(), extra_flags())
                except Exception as e:  # noqa: BLE001 - any failure means: use PyTorch's kernel
                    _error = str(e)
                    log.warning("CPU attention kernel unavailable (%s): using PyTorch's "
                                "scaled_dot_product_attention, same math, slower", _error)
    return _kernel


def set_mode(mode: str) -> None:
    """`train.attention_kernel`: auto (the faster of kernel and SDPA, per shape), kernel, or sdpa."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"attention kernel mode {mode!r}; allowed: {', '.join(MODES)}")
    _mode = mode


def set_enabled(on: bool) -> None:
    set_mode("auto" if on else "sdpa")


def mode() -> str:
    return _mode


@contextmanager
def twice_differentiable():
    """Attention that autograd can differentiate twice (a gradient penalty differentiates D's input
    gradient): PyTorch's math SDPA. Neither the kernel nor SDPA's flash path has a double backward."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    old = _mode
    set_mode("sdpa")
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        set_mode(old)


def available() -> bool:
    """Whether the kernel may run in this process (switched on and built)."""
    return _mode != "sdpa" and _default_kernel() is not None


def kernel() -> Kernel | None:
    return _default_kernel() if _mode != "sdpa" else None


# ---------------------------------------------------------------- auto: the faster path per shape

def _shape_key(b: int, n: int, d: int, grad: bool) -> str:
    return f"n{n}_d{d}_b{min(b, TIMING_BATCH)}_t{torch.get_num_threads()}_{'train' if grad else 'infer'}"


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """PyTorch's path, as the model calls it (scale 1, one head)."""
    return F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], scale=1.0)[:, 0]


def time_paths(kern: Kernel, b: int, n: int, d: int, grad: bool, reps: int = 3) -> dict[str, float]:
    """Seconds per call (forward, and backward when `grad`) of the kernel and of SDPA on random
    inputs of this shape: the best of `reps` after one warm-up. Draws from its own generator, so
    the training's random streams are untouched."""
    gen = torch.Generator().manual_seed(n * 31 + d)
    b = min(b, TIMING_BATCH)
    out = {}
    for name, fn in (("kernel", lambda *t: _Attention.apply(kern, *t)), ("sdpa", sdpa)):
        def once():
            leaves = [t.clone().requires_grad_(grad) for t in (q, k, v)]
            o = fn(*leaves)
            if grad:
                torch.autograd.backward(o, g)
        best = float("inf")
        with torch.inference_mode(False), torch.set_grad_enabled(grad), torch.autocast("cpu", enabled=False):
            q, k, v, g = (torch.randn(b, n, d, generator=gen) for _ in range(4))
            for i in range(reps + 1):
                t0 = time.perf_counter()
                once()
                if i:
                    best = min(best, time.perf_counter() - t0)
        out[name] = best
    return out


def choose(kern: Kernel, b: int, n: int, d: int, grad: bool) -> str:
    """`kernel` or `sdpa` for this shape: cached in memory and beside the build."""
    key = _shape_key(b, n, d, grad)
    choice = kern.choices.get(key)
    if choice is None:
        with _lock:
            t = time_paths(kern, b, n, d, grad)
            choice = "sdpa" if t["sdpa"] < (1 - TIE_MARGIN) * t["kernel"] else "kernel"
            log.info("attention %s: kernel %.2f ms, SDPA %.2f ms -> %s (cached in %s)", key,
                     t["kernel"] * 1e3, t["sdpa"] * 1e3, choice, kern.choices_path.name)
            try:  # merge with what other processes decided meanwhile, then replace atomically
                on_disk = json.loads(kern.choices_path.read_text())
            except (OSError, ValueError):
                on_disk = {}
            kern.choices = {**on_disk, **kern.choices, key: choice}
            fd, tmp = tempfile.mkstemp(dir=kern.path.parent, suffix=".json.tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(kern.choices, f, indent=1, sort_keys=True)
            os.replace(tmp, kern.choices_path)
    return choice


def path_for(b: int, n: int, d: int, grad: bool | None = None) -> str:
    """What CPU float32 attention of this shape runs on in this process: `native` (the kernel) or `sdpa`."""
    kern = kernel()
    if kern is None or d not in HEAD_SIZES:
        return "sdpa"
    if _mode == "kernel":
        return "native"
    grad = torch.is_grad_enabled() if grad is None else grad
    return "native" if choose(kern, b, n, d, grad) == "kernel" else "sdpa"


def kernel_name() -> str:
    """Whether the kernel may run in this process: `native` or `sdpa` (recorded with every run)."""
    return "native" if available() else "sdpa"


def supports(q: torch.Tensor) -> bool:
    """Whether `attention` should run this query tensor (else the caller uses SDPA)."""
    return (q.device.type == "cpu" and q.dtype == torch.float32 and q.dim() == 3
            and path_for(*q.shape) == "native")


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kern: Kernel, q, k, v):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        b, n, d = q.shape
        out = torch.empty_like(q)
        lse = torch.empty(b, n, dtype=torch.float32)
        kern.run_forward(q, k, v, out, lse)
        ctx.kern = kern
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        ctx.kern.run_backward(q, k, v, out, grad_out.contiguous(), lse, dq, dk, dv)
        return None, dq, dk, dv


class _AttentionBF16(torch.autograd.Function):
    """The bf16 path: (B, N, 3d) bf16 q|k|v in, (B, N, d) bf16 out; the gradient is (B, N, 3d) bf16."""

    @staticmethod
    def forward(ctx, kern: Kernel, qkv):
        qkv = qkv.contiguous()
        b, n, d3 = qkv.shape
        out = qkv.new_empty(b, n, d3 // 3)
        # the float32 output, for the backward's sum dO.O (from the bf16 output, dq's error was 2-5x)
        out32 = torch.empty(b, n, d3 // 3, dtype=torch.float32)
        lse = torch.empty(b, n, dtype=torch.float32)
        kern.run_forward_bf16(qkv, out, out32, lse)
        ctx.kern = kern
        ctx.save_for_backward(qkv, out32, lse)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        qkv, out32, lse = ctx.saved_tensors
        dqkv = torch.empty_like(qkv)
        ctx.kern.run_backward_bf16(qkv, out32, grad_out.to(torch.bfloat16).contiguous(), lse, dqkv)
        return None, dqkv


def supports_bf16(qkv: torch.Tensor) -> bool:
    """Whether `attention_bf16` should run this fused (B, N, 3d) bf16 tensor: a CPU shape whose
    float32 choice is the kernel (see the module docstring)."""
    return (qkv.device.type == "cpu" and qkv.dtype == torch.bfloat16 and qkv.dim() == 3
            and qkv.shape[-1] % 3 == 0 and path_for(qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3) == "native")


def attention_bf16(qkv: torch.Tensor, kern: Kernel | None = None) -> torch.Tensor:
    """softmax(q k^T) v in bf16 for q, k, v = the thirds of the last dimension of a bf16 CPU tensor
    (B, N, 3d), d in HEAD_SIZES; float32 inside, bf16 output (B, N, d)."""
    kern = kern or kernel()
    if kern is None:
        raise RuntimeError("the CPU attention kernel is unavailable: see `supports_bf16`")
    if qkv.dtype != torch.bfloat16 or qkv.dim() != 3 or qkv.shape[-1] % 3 or qkv.shape[-1] // 3 not in HEAD_SIZES:
        raise ValueError(f"need a bf16 (B, N, 3d) tensor with d in {HEAD_SIZES}, got {qkv.dtype} {tuple(qkv.shape)}")
    return _AttentionBF16.apply(kern, qkv)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kern: Kernel | None = None) -> torch.Tensor:
    """softmax(q k^T) v for float32 CPU tensors (B, N, d) with d in HEAD_SIZES, on `kern` (default:
    this process's build)."""
    kern = kern or kernel()
    if kern is None:
        raise RuntimeError(f"the CPU attention kernel is {'switched off' if _mode == 'sdpa' else 'unavailable'}"
                           ": use scaled_dot_product_attention (see `supports`)")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"q, k, v must have one shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[-1] not in HEAD_SIZES:
        raise ValueError(f"head size {q.shape[-1]} not supported; supported: {HEAD_SIZES}")
    return _Attention.apply(kern, q, k, v)


# The same kernel as an operator torch.compile can keep in its graph (train.compile=true): Dynamo
# cannot trace through ctypes, so without it a compiled model falls back to SDPA (2.2x slower a
# step on a Zen 5). The forward returns the log-sum-exp the backward needs. float32 only: a compiled
# bf16 model casts q, k, v to float32 around it (the bf16 entry points are for eager mode).
@torch.library.custom_op("sagan::attention_forward", mutates_args=())
def _op_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    kern = kernel()
    if kern is None:
        raise RuntimeError("the CPU attention kernel is unavailable")
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[0], q.shape[1], dtype=torch.float32)
    kern.run_forward(q, k, v, out, lse)
    return out, lse


@_op_forward.register_fake
def _(q, k, v):
    return q.new_empty(q.shape), q.new_empty(q.shape[:2])


@torch.library.custom_op("sagan::attention_backward", mutates_args=())
def _op_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                 grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    kernel().run_backward(q, k, v, out.contiguous(), grad_out.contiguous(), lse.contiguous(), dq, dk, dv)
    return dq, dk, dv


@_op_backward.register_fake
def _(q, k, v, out, lse, grad_out):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _op_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs, *output)


def _op_grad(ctx, grad_out, _grad_lse):
    q, k, v, out, lse = ctx.saved_tensors
    return _op_backward(q, k, v, out, lse, grad_out)


_op_forward.register_autograd(_op_grad, setup_context=_op_setup)


def compilable(q: torch.Tensor) -> bool:
    """Whether a compiled model runs this query tensor on the kernel: where it is built and allowed
    (not `sdpa`) and supports the head size; `auto`'s per-shape timing is not consulted in a graph."""
    return (q.device.type == "cpu" and q.dtype == torch.float32 and q.dim() == 3
            and q.shape[-1] in HEAD_SIZES and _mode != "sdpa" and kernel() is not None)


def attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`attention` through the registered operator, for compiled models."""
    return _op_forward(q, k, v)[0]
