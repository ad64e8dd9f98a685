"""Every entry point answers --help without doing any work, and refuses arguments it does not take."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a fresh interpreter importing torch per entry point

ROOT = Path(__file__).resolve().parent.parent
STAGES = sorted(p.stem for p in (ROOT / "stages").glob("*.py") if p.stem != "__init__")
MODULES = [f"stages.{s}" for s in STAGES] + ["pipeline.grid", "pipeline.report", "pipeline.run_import", "pipeline.params_doc"]
SCRIPTS = sorted(str(p) for p in (ROOT / "bench").glob("*.py") if p.stem != "naive_sagan")  # naive_sagan: a module


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("target", MODULES + SCRIPTS)
def test_help_describes_and_does_nothing(target, tmp_path):
    res = _run(["-m", target, "--help"] if target in MODULES else [target, "--help"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage:") and len(res.stdout.splitlines()) > 2
    assert list(tmp_path.iterdir()) == []  # no params.yaml needed, nothing written


def test_a_stage_refuses_arguments(tmp_path):
    res = _run(["-m", "stages.check_params", "--steps", "5"], tmp_path)
    assert res.returncode == 2 and "unrecognized arguments: --steps 5" in res.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("script", ["sagan-grid", "sagan-report", "sagan-import-runs"])
def test_console_scripts_are_installed(script, tmp_path):
    exe = Path(sys.executable).parent / script
    assert exe.exists(), f"{script} missing: reinstall with pip install -e ."
    res = subprocess.run([str(exe), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("usage:"), res.stderr
