"""Helpers for end-to-end tests: a throw-away git + DVC repository holding a copy of the project."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PROJECT_FILES = ["pipeline", "stages", "bench", "dvc.yaml", "params.yaml", "pyproject.toml", ".gitignore",
                 ".dvcignore", ".dvc/config", ".dvc/.gitignore", ".dvc/plots"]

# a budget that exercises every stage in seconds
TINY = {
    "train": {"steps": 6, "batch_size": 16, "checkpoint_every": 3, "log_every": 2, "eval_every": 3,
              "eval_n": 50, "snapshot_every": 2, "precision": "fp32", "threads": 1},
    "sample": {"n": 200, "grid_rows": 4},
    "evaluate": {"n_samples": 100, "classifier": {"epochs": 1}},
    "ablation": {"seeds": [0, 1], "steps": 4, "n_samples": 100, "jobs": 2},
}


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{VENV_BIN}{os.pathsep}{e.get('PATH', '')}"
    e.pop("MLFLOW_TRACKING_URI", None)
    e.pop("DVC_ROOT", None)
    e["PYTHONUNBUFFERED"] = "1"
    e["DVC_NO_ANALYTICS"] = "1"
    return e


def run(cmd: list[str] | str, cwd: Path, check: bool = True, timeout: int = 600, **kw) -> subprocess.CompletedProcess:
    if isinstance(cmd, str):
        cmd = cmd.split()
    res = subprocess.run(cmd, cwd=cwd, env=kw.pop("env", env()), capture_output=True, text=True,
                         timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {res.returncode}\n"
                             f"--- stdout\n{res.stdout[-4000:]}\n--- stderr\n{res.stderr[-6000:]}")
    return res


def deep_update(d: dict, u: dict) -> dict:
    for k, v in u.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            deep_update(d[k], v)
        else:
            d[k] = v
    return d


def make_repo(path: Path, overrides: dict | None = None) -> Path:
    """A git repository with the project's files, DVC initialised, tiny params, all committed."""
    path.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if not src.exists():
            continue
        dst = path / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    deep_update(params, TINY)
    deep_update(params, overrides or {})
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], path)
    run(["git", "config", "user.email", "test@example.com"], path)
    run(["git", "config", "user.name", "test"], path)
    if not (path / ".dvc" / "config").exists():
        run(["dvc", "init", "-q"], path)
    run(["git", "add", "-A"], path)
    run(["git", "commit", "-qm", "project"], path)
    return path
