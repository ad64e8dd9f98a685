"""The DVC runner: each cell x seed a queued DVC experiment (`dvc exp run --queue`), run by
`dvc queue start -j N`; the grid follows them in the MLflow store and in `dvc exp show --json`.

Why the DVC queue (and not `matrix:` in dvc.yaml): `dvc repro` runs stages one at a time, while the
queue's workers run experiments in parallel; each cell stays an ordinary experiment (`dvc exp show`,
`dvc plots diff`) that reuses the cached prepare and evaluator stages. Everything a worker needs
travels as params (`-S`): queued experiments see neither untracked files nor environment variables set
at queue time."""
from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import time
from pathlib import Path

import psutil

from pipeline import grid_runs
from pipeline.config import Params
from pipeline.errors import UserError
from pipeline.grid.cell import SHARED_STAGES
from pipeline.grid.spec import Cell, GridSpec, yaml_value

log = logging.getLogger("grid")

DVC_POLL_S = 30.0  # `dvc exp show` costs ~1 s of CPU a call; the store's finished runs are one SQL query


def _dvc(*args: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
    try:
        res = subprocess.run(["dvc", *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        if check:
            raise UserError(f"`dvc {' '.join(args)}` did not answer in {timeout:.0f} s") from None
        return subprocess.CompletedProcess(["dvc", *args], -1, "", "timed out")
    if check and res.returncode != 0:
        raise UserError(f"`dvc {' '.join(args)}` failed:\n{res.stderr.strip() or res.stdout.strip()}")
    return res


def queue_processes(root: Path) -> list[psutil.Process]:
    """DVC queue workers (and their `dvc queue start` wrappers) running in `root`."""
    procs = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmd, cwd = proc.info.get("cmdline") or [], proc.info.get("cwd")
        if not cmd or not cwd:
            continue
        is_queue = "queue-worker" in cmd or ("queue" in cmd and "start" in cmd)
        if is_queue and any("dvc" in part for part in cmd[:2]) and (Path(cwd) == root or root in Path(cwd).parents):
            procs.append(proc)
    return procs


def stop_workers(root: Path, grace_s: float = 30.0) -> int:
    """Asks the queue's workers to stop, then kills those still alive after grace_s: a celery worker
    sometimes never exits after "shutting down due to empty queue" (seen with DVC 3.67 / celery 5.7).
    Returns how many were killed."""
    _dvc("queue", "stop", check=False, timeout=120)
    return kill_lingering_workers(root, grace_s)


def kill_lingering_workers(root: Path, grace_s: float = 30.0) -> int:
    """Waits up to grace_s for the queue processes of `root` to exit, then kills the rest (psutil
    checks each is still the process it found: a reused PID is not killed)."""
    _, alive = psutil.wait_procs(queue_processes(root), timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    if alive:
        log.warning("killed %d DVC queue process(es) that did not exit after the queue stopped", len(alive))
    return len(alive)


def experiment_states() -> dict[str, str] | None:
    """Experiment name -> queued | running | success | failed, from `dvc exp show --json` (`dvc queue
    status` prints text only); None when DVC does not answer (busy: ask again)."""
    res = _dvc("exp", "show", "--json", check=False, timeout=120)
    if res.returncode != 0:
        return None
    states: dict[str, str] = {}
    for baseline in json.loads(res.stdout or "[]"):
        for exp in baseline.get("experiments") or []:
            name = exp.get("name") or next((r.get("name") for r in exp.get("revs") or [] if r.get("name")), None)
            # a finished experiment is a git ref; DVC reports an executor for it only while the queue remembers it
            state = (exp.get("executor") or {}).get("state") or "success"
            if name:
                states[name] = state
    return states


def _start_workers(jobs: int) -> tuple[subprocess.Popen, Path]:
    """`dvc queue start` in the background, its output in a log file: the workers it spawns inherit
    its stdout and stderr, so a captured pipe would keep us waiting for as long as any worker lives
    (a celery worker that hangs on shutdown then hung the grid after every task had finished)."""
    log_path = Path(".dvc/tmp/grid-queue-start.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as out:
        proc = subprocess.Popen(["dvc", "queue", "start", "-j", str(jobs)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return proc, log_path


def run(p: Params, spec: GridSpec, todo: list[Cell], threads: int, **_options) -> list[Cell]:
    """Queues the cells as DVC experiments and runs them with `dvc queue start -j spec.jobs`. Progress:
    the store's finished runs every 5 s, DVC's experiment states (the word on success, failure and a
    stopped queue) every DVC_POLL_S and whenever the store has a run DVC has not yet called done."""
    from tqdm import tqdm

    experiment = p.mlflow.experiment
    # the shared stages once, in the workspace, so the queued experiments restore them from the cache
    log.info("reproducing the shared stages (prepare, %s)", ", ".join(SHARED_STAGES))
    res = subprocess.run(["dvc", "repro", *SHARED_STAGES], text=True)
    if res.returncode != 0:
        raise UserError(f"`dvc repro {' '.join(SHARED_STAGES)}` failed; fix it before running the grid")
    names = {}
    for cell in todo:
        name = spec.run_name(cell)
        _dvc("exp", "remove", name, check=False)  # a failed earlier attempt holds the name
        sets = [a for k, v in spec.overrides(cell, threads).items() for a in ("-S", f"{k}={yaml_value(v)}")]
        _dvc("exp", "run", "--queue", "evaluate", "-n", name, *sets)
        names[name] = cell
    starter, start_log = _start_workers(spec.jobs)
    bar = tqdm(total=len(todo), desc=f"grid {spec.name}", unit="run")
    finished: set[str] = set()
    failed: list[Cell] = []
    idle = 0
    asked_dvc = 0.0
    try:
        while True:
            if starter.poll():
                raise UserError(f"`dvc queue start -j {spec.jobs}` failed (exit {starter.returncode}):\n"
                                f"{start_log.read_text().strip()}")
            in_store = grid_runs.finished_grid_runs(experiment, spec.name, spec.axes)
            done_in_store = {n for n, c in names.items() if (c.label, c.seed) in in_store and n not in finished}
            if not done_in_store and time.monotonic() - asked_dvc < DVC_POLL_S:
                time.sleep(5)
                continue
            asked_dvc = time.monotonic()
            states = experiment_states()
            if states is None:
                continue  # a busy repository: ask again
            for name, cell in names.items():
                state = states.get(name)
                if state in ("success", "failed") and name not in finished:
                    finished.add(name)
                    bar.update(1)
                    if state == "failed":
                        failed.append(cell)
                        log.error("cell %s seed %d failed: `dvc queue logs %s`", cell.label, cell.seed, name)
            pending = [n for n in names if n not in finished]
            if not pending:
                break
            # nothing of ours queued or running, twice in a row (not a task between two states): the
            # queue has stopped; what is left did not run
            idle = 0 if any(states.get(n) in ("queued", "running") for n in pending) else idle + 1
            if idle >= 2:
                for name in pending:
                    failed.append(names[name])
                    log.error("cell %s seed %d never ran (DVC's queue stopped): see `dvc queue status` and %s",
                              names[name].label, names[name].seed, start_log)
                break
            time.sleep(5)
    finally:
        bar.close()
        stop_workers(Path.cwd().resolve())
    return failed
