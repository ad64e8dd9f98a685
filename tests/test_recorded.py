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

ROOT = Path(__file__).resolve().parent.parent
RECORDED = json.loads((ROOT / "tests/data/recorded_before_split.json").read_text())
# baseline instruction sets everywhere: what any x86-64 CPU computes bit for bit
BASELINE = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "SAGAN_KERNEL_TARGET": "portable"}


@pytest.fixture(scope="module")
def now(tmp_path_factory):
    env = {**os.environ, **BASELINE, "SAGAN_CACHE": str(tmp_path_factory.mktemp("cache")), "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, str(ROOT / "tests/recorded_run.py")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="recorded on x86-64")
def test_training_is_bit_identical_to_the_recorded_run(now):
    assert now["training"]["losses"] == RECORDED["training"]["losses"]
    assert now["training"]["weights_sha256"] == RECORDED["training"]["weights_sha256"]


def test_metrics_equal_the_recorded_values(now):
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
    close(now["metrics"], RECORDED["metrics"])
