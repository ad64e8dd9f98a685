"""Refactoring changes no result: the same seed gives bit-identical fp32 weights and the same losses
and metrics as the values recorded (tests/data/recorded_before_split.json, by tests/recorded_run.py)
before pipeline/training.py and pipeline/metrics.py were split into modules."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import cpu

pytestmark = pytest.mark.slow  # trains and scores in a fresh interpreter (tests/recorded_run.py), twice

ROOT = Path(__file__).resolve().parent.parent
RECORDED = json.loads((ROOT / "tests/data/recorded_before_split.json").read_text())
# oneDNN and MKL choose their blocking by the caches too, not only the instruction set: an Intel CPU's
# baseline bits are its own (recorded with the code before the split as well)
RECORDED_TRAINING = {"AuthenticAMD": RECORDED["training"],
                     "GenuineIntel": json.loads((ROOT / "tests/data/recorded_before_split_intel.json")
                                                .read_text())["training"]}
# baseline instruction sets everywhere: what any x86-64 CPU of one vendor computes bit for bit
BASELINE = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "SAGAN_KERNEL_TARGET": "portable"}
# numpy held to its AVX2 code paths (X86_V3), as on a Zen 3, where this machine has AVX-512
NUMPY_AVX2 = {"NPY_DISABLE_CPU_FEATURES": "X86_V4,AVX512_ICL,AVX512_SPR"}


def _recorded_run(tmp_path_factory, extra_env: dict, *args: str) -> dict:
    env = {**os.environ, **BASELINE, **extra_env, "SAGAN_CACHE": str(tmp_path_factory.mktemp("cache")),
           "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, str(ROOT / "tests/recorded_run.py"), *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def now(tmp_path_factory):
    return _recorded_run(tmp_path_factory, {})


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="recorded on x86-64")
def test_training_is_bit_identical_to_the_recorded_run(now):
    vendor = cpu.vendor()
    if vendor not in RECORDED_TRAINING:
        pytest.skip(f"no recording on a {vendor} CPU")
    recorded = RECORDED_TRAINING[vendor]
    assert now["training"]["losses"] == recorded["losses"]
    assert now["training"]["weights_sha256"] == recorded["weights_sha256"]


@pytest.mark.parametrize("numpy_paths", ["native", "held to AVX2"])
def test_metrics_equal_the_recorded_values(now, numpy_paths, tmp_path_factory):
    """On this CPU's numpy code paths and on AVX2's: the classifier score's splits and the subsets
    come from keys that do not depend on the last bits, so every value matches to 1e-9."""
    if numpy_paths == "native":
        metrics = now["metrics"]
    else:
        metrics = _recorded_run(tmp_path_factory, NUMPY_AVX2, "metrics")["metrics"]

    # float64 through the machine's BLAS: equal to the last few bits
    def close(a, b):
        if isinstance(a, dict):
            assert a.keys() == b.keys()
            for k in a:
                close(a[k], b[k])
        elif isinstance(a, list):
            assert len(a) == len(b)
            for x, y in zip(a, b):
                close(x, y)
        else:
            assert np.isclose(a, b, rtol=1e-9, atol=0), (a, b)
    close(metrics, RECORDED["metrics"])
