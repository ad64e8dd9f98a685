"""The local runner: each cell x seed one process (pipeline.grid.cell) in its own folder under
.grid/<grid>/, `--jobs` at a time, without DVC: for machines where DVC's queue is not installed or costs
more than the run (a lent GPU box; CI's smoke grid). Same runs, tagged the same way."""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from pipeline import tracking
from pipeline.config import Params
from pipeline.grid.cell import SHARED_OUTPUTS, ensure_shared_outputs, params_text, thread_env
from pipeline.grid.spec import Cell, GridSpec

log = logging.getLogger("grid")

LOCAL_DIR = Path(".grid")


def _cell_folder(root: Path, p: Params, spec: GridSpec, cell: Cell, threads: int) -> Path:
    """A fresh folder holding the cell's params.yaml and links to the shared stages' outputs."""
    folder = root / LOCAL_DIR / spec.name / cell.exp_name
    shutil.rmtree(folder, ignore_errors=True)
    for path in SHARED_OUTPUTS:
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).symlink_to(root / path)
    (folder / "params.yaml").write_text(params_text(p, spec, cell, threads))
    return folder


def run(p: Params, spec: GridSpec, todo: list[Cell], threads: int, **_options) -> list[Cell]:
    """Runs each cell as one process (`python -m pipeline.grid cell`) in its own folder, spec.jobs at a
    time. The processes log to the project's MLflow store (DVC_ROOT points them at it, as DVC does for
    its temporary copies) and resume from their checkpoints (in the project's checkpoints/) when the grid
    is run again."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm import tqdm

    root = Path.cwd().resolve()
    ensure_shared_outputs(root)
    # every run records the commit the grid started from, even if HEAD moves while it runs
    env = {**os.environ, **thread_env(threads), "DVC_ROOT": str(root), "SAGAN_GIT_COMMIT": tracking.git_commit(),
           tracking.RUN_TAGS_ENV: json.dumps({"grid.runner": "local", "grid.node": socket.gethostname()}),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}

    def run_one(cell: Cell) -> tuple[Cell, int, Path, float]:
        folder = _cell_folder(root, p, spec, cell, threads)
        t0 = time.perf_counter()
        with open(folder / "run.log", "w") as out:
            rc = subprocess.run([sys.executable, "-m", "pipeline.grid", "cell"], cwd=folder, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**env, "SAGAN_RUN_NAME": spec.run_name(cell)}).returncode
        return cell, rc, folder, time.perf_counter() - t0

    failed: list[Cell] = []
    with ThreadPoolExecutor(spec.jobs) as pool, tqdm(total=len(todo), desc=f"grid {spec.name}", unit="run") as bar:
        for future in as_completed([pool.submit(run_one, c) for c in todo]):
            cell, rc, folder, seconds = future.result()
            bar.update(1)
            if rc == 0:
                log.info("cell %s seed %d done in %.0f s", cell.label, cell.seed, seconds)
            else:
                failed.append(cell)
                log.error("cell %s seed %d failed (exit %d): see %s", cell.label, cell.seed, rc,
                          folder.relative_to(root) / "run.log")
    return failed
