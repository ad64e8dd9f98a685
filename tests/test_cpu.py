"""What the project says about the CPU (pipeline/cpu.py): the class PyTorch runs as, and bf16 only
where it is fast, also on a machine told to act as an AVX2 one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cpu

ROOT = Path(__file__).resolve().parent.parent
AS_AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def _describe(env: dict[str, str]) -> dict:
    code = ("import json; from pipeline import cpu; from pipeline.config import Params, with_override;"
            "from pipeline.runtime import resolve_runtime;"
            "rt = resolve_runtime(with_override(Params(), {'train.device': 'cpu'}));"
            "print(json.dumps({**cpu.describe(), 'bf16': cpu.has_fast_bf16(), 'precision': rt.precision}))")
    # the machine as it is, then `env`: a caller's own hold (CI run held to AVX2) does not leak in
    native = {k: v for k, v in os.environ.items() if k not in AS_AVX2}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**native, **env},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def _proc_cpuinfo() -> tuple[str, set[str], int]:
    """The first processor's model name and flags, and how many processors /proc/cpuinfo lists: read here,
    not through pipeline/cpu.py, so the test checks describe() against the machine itself."""
    blocks = [b for b in Path("/proc/cpuinfo").read_text().split("\n\n") if b.strip()]
    fields = dict(line.split(":", 1) for line in blocks[0].splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return fields.get("model name", ""), set(fields.get("flags", "").split()), sum("processor" in b for b in blocks)


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="reads Linux's /proc/cpuinfo")
def test_this_machine_is_described():
    """What a user checks against `lscpu`: the model name, the core count this process may use, and the class
    its flags give (AMX tiles -> amx; else AVX-512 foundation -> avx512; else AVX2 with FMA -> avx2); with no
    variable holding PyTorch down, the class it runs as is the hardware's."""
    model, flags, processors = _proc_cpuinfo()
    d = cpu.describe()
    assert d["cpu"] == model
    assert int(d["cores"]) in (os.cpu_count(), len(os.sched_getaffinity(0)), processors)
    if "amx_tile" in flags:
        expected = "amx"
    elif "avx512f" in flags:
        expected = "avx512"
    elif {"avx2", "fma"} <= flags:
        expected = "avx2"
    else:
        expected = "baseline"
    assert d["class"] == expected, (d["class"], sorted(f for f in flags if f.startswith(("avx", "amx"))))
    held = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA") if k in os.environ}
    if not held:
        # ATen's own kernels take AVX-512 only with its VL/BW/DQ parts (a VM may hide some): else AVX2
        aten = ("AVX512" if expected in ("amx", "avx512") and {"avx512vl", "avx512bw", "avx512dq"} <= flags
                else "AVX2" if expected != "baseline" else None)
        assert d["aten_isa"] == (aten or d["aten_isa"])
        assert d["effective_class"] == (expected if aten != "AVX2" else "avx2")
    elif held.get("ATEN_CPU_CAPABILITY", "").lower() == "avx2" and expected in ("amx", "avx512"):
        assert d["effective_class"] == "avx2"  # a CI run held to AVX2 (tests/test_cpu.py's AS_AVX2)


@pytest.mark.slow
@pytest.mark.skipif(cpu.hardware_class() not in ("avx512", "amx"), reason="needs a CPU above AVX2 to hold down")
def test_held_to_avx2_it_runs_as_avx2_and_trains_in_fp32():
    """ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA make an AVX-512 machine an AVX2 one: bf16 is then
    emulated (5-10x slower than fp32), so `train.precision=auto` must not pick it."""
    d = _describe(AS_AVX2)
    assert d["effective_class"] == "avx2" and d["aten_isa"] == "AVX2" and "AVX2" in d["onednn_isa"]
    assert d["bf16"] is False and d["precision"] == "fp32"


@pytest.mark.slow
def test_bf16_only_where_the_hardware_has_it():
    d = _describe({})
    has = {"amx_bf16", "avx512_bf16"} & cpu.flags()
    assert d["bf16"] == bool(has) and d["precision"] == ("bf16" if has else "fp32")
