"""One cell x seed as one process: train -> sample -> evaluate in a folder of its own, the process every
runner but DVC's starts (`python -m pipeline.grid cell`), and what such a folder needs."""
from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from pipeline.config import Params, load_params, with_override
from pipeline.errors import UserError
from pipeline.grid.spec import Cell, GridSpec

log = logging.getLogger("grid")

# what every run reads from the shared stages: pipeline.data.PREPARED_DIR, pipeline.evaluator.EVALUATOR_FILE
# and EVALUATOR_B_FILE and their metrics (spelled out: importing those modules imports torch, 1.1 s in every
# Ray worker; a test checks they agree)
SHARED_OUTPUTS = (Path("data/prepared"), Path("models/evaluator.pt"), Path("metrics/evaluator.json"),
                  Path("models/evaluator_b.pt"), Path("metrics/evaluator_b.json"))
SHARED_STAGES = ("train_evaluator", "train_evaluator_b")  # and prepare, which both depend on


def ensure_shared_outputs(root: Path) -> None:
    """prepare and the two evaluators, once: through DVC where it is installed (so its cache knows them),
    otherwise by running the stages."""
    if all((root / path).exists() for path in SHARED_OUTPUTS):
        return
    log.info("reproducing the shared stages (prepare, %s)", ", ".join(SHARED_STAGES))
    if shutil.which("dvc"):
        cmds = [["dvc", "repro", *SHARED_STAGES]]
    else:
        cmds = [[sys.executable, "-m", f"stages.{s}"] for s in ("check_params", "prepare", *SHARED_STAGES)]
    for cmd in cmds:
        if subprocess.run(cmd, cwd=root).returncode != 0:
            raise UserError(f"`{' '.join(cmd)}` failed; fix it before running the grid")


def shared_files(root: Path) -> list[Path]:
    """The files of SHARED_OUTPUTS, relative to root."""
    files = []
    for path in SHARED_OUTPUTS:
        full = root / path
        files += sorted(f.relative_to(root) for f in full.rglob("*") if f.is_file()) if full.is_dir() else [path]
    return files


def params_text(p: Params, spec: GridSpec, cell: Cell, threads: int) -> str:
    """The params.yaml of one cell x seed."""
    import yaml

    return yaml.safe_dump(with_override(p, spec.overrides(cell, threads)).to_dict(), sort_keys=False)


def thread_env(threads: int) -> dict[str, str]:
    """Each worker's thread pools sized to its share of the cores: OpenMP (torch) and BLAS (numpy, scipy)."""
    return {"OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


PARENT_PID_ENV = "SAGAN_PARENT_PID"


def _die_with_parent() -> None:
    """Under a runner that set SAGAN_PARENT_PID (Ray's task), this process is killed when that parent
    dies: a Ray worker killed with its node, or by its driver's end, leaves no training behind
    (Linux's PR_SET_PDEATHSIG; elsewhere a no-op)."""
    parent = os.environ.get(PARENT_PID_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != int(parent):  # the parent died before the line above
        os._exit(1)


def run_cell() -> None:
    """train -> sample -> evaluate in the current folder, in one process: one interpreter start and one
    import of torch and MLflow per run instead of three."""
    _die_with_parent()
    import torch

    from pipeline.steps import evaluate, sample, train

    p = load_params()
    if p.train.threads:
        torch.set_num_threads(p.train.threads)
    for stage in (train, sample, evaluate):
        stage.main(p)
