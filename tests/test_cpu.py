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


def test_this_machine_is_described():
    d = cpu.describe()
    assert d["cpu"] and int(d["cores"]) >= 1
    assert d["class"] in ("amx", "avx512", "avx2", "baseline")
    assert d["effective_class"] == cpu.effective_class()


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
