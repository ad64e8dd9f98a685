"""What CPU this is and which of its instruction sets PyTorch uses: named beside every speed figure.

The class (`amx`, `avx512`, `avx2`, `baseline`) is what the CPU can do, as limited by the two
environment variables that hold PyTorch to a smaller instruction set (how an AVX-512 or AMX
machine stands in for an AVX2 one): ATEN_CPU_CAPABILITY (PyTorch's own vectorised ops) and
ONEDNN_MAX_CPU_ISA (oneDNN: convolutions, matrix products).
"""
from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from pathlib import Path


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's `model name` and `flags` from /proc/cpuinfo (empty elsewhere)."""
    out: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "flags", "vendor_id", "cpu family", "model") and key not in out:
                out[key] = value.strip()
    except OSError:
        pass
    return out


def model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown"


# AMD family 25 (0x19) holds both Zen 3 and Zen 4; the model number tells them apart
_AMD_FAMILY_25_ZEN4 = (range(0x10, 0x20), range(0x60, 0x80), range(0xA0, 0xB0))


def vendor() -> str:
    """`GenuineIntel`, `AuthenticAMD`, ... (`unknown` off Linux)."""
    return _cpuinfo().get("vendor_id") or "unknown"


def microarchitecture() -> str:
    """The core design, where the model name does not say it (a cloud VM's is often just `AMD EPYC`):
    e.g. `AMD Zen 4 (family 25 model 17)`. Two machines of one class (avx512) can differ twice in speed."""
    info = _cpuinfo()
    try:
        family, model_no = int(info["cpu family"]), int(info["model"])
    except (KeyError, ValueError):
        return "unknown"
    vendor = info.get("vendor_id", "")
    where = f"family {family} model {model_no}"
    if vendor == "AuthenticAMD":
        if family == 25:
            zen = "Zen 4" if any(model_no in r for r in _AMD_FAMILY_25_ZEN4) else "Zen 3"
        else:
            zen = {23: "Zen/Zen 2", 26: "Zen 5"}.get(family)
        return f"AMD {zen} ({where})" if zen else f"AMD ({where})"
    if vendor == "GenuineIntel":
        return f"Intel ({where})"
    return f"{vendor or 'unknown'} ({where})"


def flags() -> set[str]:
    return set(_cpuinfo().get("flags", "").split())


def hardware_class() -> str:
    """amx | avx512 | avx2 | baseline: the widest vector/matrix unit this CPU has."""
    f = flags()
    if "amx_bf16" in f:
        return "amx"
    if "avx512f" in f:
        return "avx512"
    if "avx2" in f and "fma" in f:
        return "avx2"
    return "baseline"


def aten_capability() -> str:
    """The instruction set PyTorch's own CPU kernels dispatch to (AVX512, AVX2, DEFAULT, ...)."""
    import torch

    return torch.backends.cpu.get_cpu_capability()


def effective_class() -> str:
    """The class PyTorch runs as here: the hardware's, held down by ATEN_CPU_CAPABILITY and
    ONEDNN_MAX_CPU_ISA where they are set (e.g. `avx2` on an AMX machine told to act as AVX2)."""
    hw = hardware_class()
    order = ["baseline", "avx2", "avx512", "amx"]
    limit = hw
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    onednn = onednn.upper()
    if onednn and onednn not in ("ALL", "DEFAULT"):
        limit = ("amx" if "AMX" in onednn else "avx512" if "AVX512" in onednn or "AVX10" in onednn
                 else "avx2" if "AVX2" in onednn else "baseline")
    aten = aten_capability().upper()
    aten_limit = "avx512" if aten.startswith("AVX512") else "avx2" if aten.startswith("AVX2") else "baseline"
    if hw == "amx" and aten_limit == "avx512":
        aten_limit = "amx"  # ATen has no AMX level of its own; oneDNN is what uses AMX
    return min(hw, limit, aten_limit, key=order.index)


def has_fast_bf16() -> bool:
    """AMX or AVX512-BF16, and PyTorch allowed to use them: bf16 convolutions are then faster than
    fp32 on the CPU. Where oneDNN or ATen is held to AVX2, bf16 is emulated and 5-10x slower."""
    import torch

    f = flags()
    if "amx_bf16" not in f and "avx512_bf16" not in f:
        return False
    if effective_class() not in ("avx512", "amx"):
        return False
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@functools.cache
def onednn_isa() -> str:
    """The instruction set oneDNN reports it uses, as it prints it (`Intel AVX2`, ...): asked of a
    fresh interpreter with ONEDNN_VERBOSE=1, since oneDNN says it once per process."""
    code = ("import torch; x = torch.ones(2, 8, 8, 8).contiguous(memory_format=torch.channels_last); "
            "torch.nn.functional.conv2d(x, torch.ones(8, 8, 3, 3))")  # batch 1 skips oneDNN
    try:
        res = subprocess.run([sys.executable, "-c", code], env={**os.environ, "ONEDNN_VERBOSE": "1"},
                             capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    for line in res.stdout.splitlines():
        if ",isa:" in line:
            return line.split(",isa:", 1)[1].strip()
    return "unknown"


def describe() -> dict[str, str]:
    """Everything above, for benchmarks' and runs' records."""
    return {"cpu": model(), "uarch": microarchitecture(), "cores": str(os.cpu_count() or 0), "class": hardware_class(),
            "effective_class": effective_class(), "aten_isa": aten_capability(), "onednn_isa": onednn_isa()}
