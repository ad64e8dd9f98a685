"""The project's CPU attention kernel (pipeline/fast_attention.py): exact against a float64
reference for every build target (this CPU's own, AVX2 and the portable baseline), thread-count
independent, a drop-in for SDPA inside the model, optional, and used by `auto` only where it is
faster than SDPA."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline import fast_attention
from pipeline.models import SelfAttention

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not fast_attention.available(),
                                reason="no C++ compiler: the model runs on SDPA (tested elsewhere)")


def _can_run(target: str) -> bool:
    """x86-64-v3 code runs on CPUs with AVX2 and FMA; native and portable run anywhere."""
    if target != "x86-64-v3":
        return True
    from pipeline import cpu
    return {"avx2", "fma", "bmi2"} <= cpu.flags()


TARGETS = [pytest.param(t, marks=pytest.mark.skipif(not _can_run(t), reason=f"this CPU cannot run {t} code"))
           for t in fast_attention.TARGETS]


@pytest.fixture(scope="module", params=TARGETS)
def kern(request):
    return fast_attention.build(request.param)


def reference(q, k, v):
    p = torch.softmax(q.double() @ k.double().transpose(1, 2), dim=-1)
    return p @ v.double()


@pytest.mark.parametrize("b,n,d,scale", [(2, 784, 4, 1.0), (3, 196, 8, 1.0), (2, 49, 16, 0.5),
                                         (2, 50, 2, 2.0), (1, 10, 1, 1.0), (2, 196, 4, 3.0)])
def test_matches_float64_reference_forward_and_backward(kern, b, n, d, scale):
    gen = torch.Generator().manual_seed(n * d)
    q, k, v = (torch.randn(b, n, d, generator=gen) * scale for _ in range(3))
    grad = torch.randn(b, n, d, generator=gen)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = fast_attention.attention(*leaves, kern=kern)
    grads = torch.autograd.grad(out, leaves, grad)
    ref_leaves = [t.double().requires_grad_() for t in (q, k, v)]
    ref = reference(*ref_leaves)
    ref_grads = torch.autograd.grad(ref, ref_leaves, grad.double())
    # float32 accumulation over n keys: relative error ~1e-6 times the size of the values
    tol = 1e-5 * max(1.0, scale ** 2)
    assert out.dtype == torch.float32 and out.shape == (b, n, d)
    assert (out.double() - ref).abs().max() < tol
    for name, g, r in zip("qkv", grads, ref_grads):
        assert (g.double() - r).abs().max() < 10 * tol, name


def test_each_target_uses_its_own_vector_width(kern):
    expected = {"x86-64-v3": 8, "portable": 4 if platform.machine() in ("x86_64", "AMD64") else None}
    if expected.get(kern.target):
        assert kern.vector_width == expected[kern.target]
    assert kern.vector_width in (4, 8, 16)


def test_bit_identical_for_any_thread_count(kern):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(6, 196, 8, generator=gen) for _ in range(3))
    grad = torch.randn(6, 196, 8, generator=gen)
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            leaves = [t.clone().requires_grad_() for t in (q, k, v)]
            out = fast_attention.attention(*leaves, kern=kern)
            results.append([out, *torch.autograd.grad(out, leaves, grad)])
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def test_model_layer_same_as_with_sdpa():
    """The attention block gives the same output and parameter gradients on either kernel."""
    torch.manual_seed(0)
    layer = SelfAttention(32, gamma_init=0.7)
    x = torch.randn(4, 32, 28, 28).contiguous(memory_format=torch.channels_last)
    outs, grads = [], []
    try:
        for on in (True, False):
            fast_attention.set_mode("kernel" if on else "sdpa")
            layer.zero_grad()
            out = layer(x)
            out.square().mean().backward()
            outs.append(out.detach())
            grads.append([p.grad.clone() for p in layer.parameters()])
    finally:
        fast_attention.set_enabled(True)
    assert (outs[0] - outs[1]).abs().max() < 1e-5
    for a, b in zip(*grads):
        assert (a - b).abs().max() <= 1e-5 * max(1.0, b.abs().max().item())


def test_the_registered_operator_is_the_kernel():
    """`attention_op` (what a torch.compile'd model calls, train.compile=true) gives the kernel's
    bits, forward and backward, and passes PyTorch's operator checks (fake tensors, autograd)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 196, 4, requires_grad=True) for _ in range(3))
    a = fast_attention.attention(q, k, v)
    ga = torch.autograd.grad(a.square().sum(), (q, k, v))
    b = fast_attention.attention_op(q, k, v)
    gb = torch.autograd.grad(b.square().sum(), (q, k, v))
    assert torch.equal(a, b) and all(torch.equal(x, y) for x, y in zip(ga, gb))
    torch.library.opcheck(fast_attention._op_forward, (q, k, v),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


@pytest.mark.slow
def test_without_a_compiler_the_model_falls_back_to_sdpa(tmp_path):
    """No compiler (or a failing one): a warning, `sdpa` recorded, and training still works."""
    code = ("import torch; from pipeline import fast_attention as fa; from pipeline.models import SelfAttention;"
            "x = torch.randn(2, 16, 14, 14); y = SelfAttention(16, 0.5)(x); y.sum().backward();"
            "print(fa.kernel_name(), tuple(y.shape))")
    env = {**os.environ, "CXX": "/bin/false", "SAGAN_CACHE": str(tmp_path / "cache")}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[0] == "sdpa"
    assert "CPU attention kernel unavailable" in res.stderr
    assert not list((tmp_path / "cache").glob("*.so"))


@pytest.mark.slow
def test_builds_once_into_the_cache(tmp_path):
    code = "from pipeline import fast_attention as fa; print(fa.kernel_name())"
    env = {**os.environ, "SAGAN_CACHE": str(tmp_path / "cache")}
    for _ in range(2):
        res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0 and res.stdout.strip() == "native", res.stderr
    built = list((tmp_path / "cache").iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"


def test_setting_picks_the_kernel_and_the_run_records_it():
    from pipeline.config import Params, with_override
    from pipeline.runtime import resolve_runtime

    try:
        sdpa = resolve_runtime(with_override(Params(), {"train.attention_kernel": "sdpa", "train.device": "cpu"}))
        assert sdpa.attention_kernel == "sdpa" and not fast_attention.available()
        auto = resolve_runtime(with_override(Params(), {"train.device": "cpu"}))
        assert auto.attention_kernel == "native" and fast_attention.available()
    finally:
        fast_attention.set_enabled(True)


@pytest.mark.slow
def test_auto_keeps_sdpa_where_the_kernel_is_slower(tmp_path, monkeypatch):
    """A planted slow kernel (the same source built without optimisation) loses to SDPA; the
    choice is cached beside its build and not timed again."""
    monkeypatch.setenv("SAGAN_CACHE", str(tmp_path))
    slow = fast_attention.build("native", ["-O0"])
    assert fast_attention.choose(slow, 16, 784, 4, grad=True) == "sdpa"
    cached = json.loads(slow.choices_path.read_text())
    assert list(cached.values()) == ["sdpa"] and slow.choices_path.parent == slow.path.parent
    # a second process reads the cache instead of timing again: plant the opposite answer to see it
    slow.choices_path.write_text(json.dumps({k: "kernel" for k in cached}))
    again = fast_attention.build("native", ["-O0"])
    assert fast_attention.choose(again, 16, 784, 4, grad=True) == "kernel"


@pytest.mark.slow
def test_auto_times_both_paths_on_the_shape(tmp_path, monkeypatch):
    monkeypatch.setenv("SAGAN_CACHE", str(tmp_path))
    kern = fast_attention.build("native")
    t = fast_attention.time_paths(kern, 4, 196, 8, grad=True)
    assert set(t) == {"kernel", "sdpa"} and all(0 < v < 10 for v in t.values())
    rng_before = torch.get_rng_state()
    fast_attention.choose(kern, 4, 196, 8, grad=False)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the training's random stream is untouched


def _layers_path_under_auto(p) -> tuple[str, dict[str, str]]:
    """What `auto` must give each attention layer of a training step of `p` on this machine, worked out here
    from its inputs: the layer's shapes (G: one batch; D: reals and fakes together, then the fakes alone;
    head size = channels / 8; G has 64 channels at 14x14 and 32 at 28x28, D `model.d_channels` at 14x14),
    keyed as the choice is cached (batches above 64 timed at 64, the thread count, training), and the choice
    `auto` made for that key, read from the file beside the build (made once per machine and build)."""
    b, dc = p.train.batch_size, p.model.d_channels
    shapes = {"g14": [(b, 14 * 14, 64 // 8)], "g28": [(b, 28 * 28, 32 // 8)],
              "d14": [(2 * b, 14 * 14, dc // 8), (b, 14 * 14, dc // 8)]}
    on_disk = json.loads(fast_attention.kernel().choices_path.read_text())
    t = torch.get_num_threads()
    paths = {name: "+".join(sorted({"native" if on_disk[f"n{n}_d{d}_b{min(bb, 64)}_t{t}_train"] == "kernel" else "sdpa"
                                    for bb, n, d in shape}))
             for name, shape in shapes.items()}
    used = set("+".join(paths.values()).split("+"))
    return (used.pop() if len(used) == 1 else "mixed"), paths


def _paths_the_layers_take(p, monkeypatch) -> dict[str, set[str]]:
    """Which attention each layer of G and D actually runs in a training step's forward passes."""
    import torch.nn.functional as F

    from pipeline.models import Discriminator, Generator, ModelConfig

    current, taken = [None], {}
    real_kernel, real_sdpa = fast_attention.attention, F.scaled_dot_product_attention

    def spy(path, fn):
        def call(*a, **k):
            taken.setdefault(current[0], set()).add(path)
            return fn(*a, **k)
        return call

    monkeypatch.setattr(fast_attention, "attention", spy("native", real_kernel))
    monkeypatch.setattr(F, "scaled_dot_product_attention", spy("sdpa", real_sdpa))
    cfg = ModelConfig.from_params(p)
    g, d = Generator(cfg), Discriminator(cfg)
    for net in (g, d):
        for name, layer in net.attention_layers().items():
            layer.register_forward_pre_hook(lambda _m, _a, name=name: current.__setitem__(0, name))
    b = p.train.batch_size
    fake = g(torch.randn(b, cfg.z_dim))
    d(torch.cat([torch.rand(b, 1, 28, 28), fake.detach()]).contiguous(memory_format=torch.channels_last))
    d(fake)
    return taken


def test_runtime_records_each_layers_path(monkeypatch):
    """`train.attention_kernel=kernel` puts every layer on the kernel; the default `auto` records, per layer,
    the path worked out from the shapes and the choice cached for this machine (bf16 follows the float32
    choice, so the precision changes nothing), and that is the path each layer then runs."""
    from pipeline.config import Params, with_override
    from pipeline.runtime import resolve_runtime

    try:
        rt = resolve_runtime(with_override(Params(), {"train.device": "cpu", "train.attention_kernel": "kernel"}))
        assert rt.attention_kernel == "native"
        assert rt.attention_paths == "d14=native g14=native g28=native"
        p = with_override(Params(), {"train.device": "cpu"})
        assert p.train.attention_kernel == "auto"  # the shipped default
        rt = resolve_runtime(p)
        summary, paths = _layers_path_under_auto(p)
        assert rt.attention_paths == " ".join(f"{k}={v}" for k, v in sorted(paths.items()))
        assert rt.attention_kernel == summary
        for precision in ("fp32", "bf16"):
            again = resolve_runtime(with_override(p, {"train.precision": precision}))
            assert (again.attention_kernel, again.attention_paths) == (rt.attention_kernel, rt.attention_paths)
        taken = _paths_the_layers_take(p, monkeypatch)
        assert {k: "+".join(sorted(v)) for k, v in taken.items()} == paths
    finally:
        fast_attention.set_mode("auto")


def test_target_setting_is_checked():
    env = {**os.environ, "SAGAN_KERNEL_TARGET": "avx9"}
    res = subprocess.run([sys.executable, "-c", "from pipeline import fast_attention as fa; fa.target()"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "SAGAN_KERNEL_TARGET = 'avx9'; allowed: native, x86-64-v3, portable" in res.stderr
