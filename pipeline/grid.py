"""The ablation grid in one command: every cell x seed as a queued DVC experiment, run in parallel.

    python -m pipeline.grid run            # the grid of params.yaml `ablation:` (make grid)
    python -m pipeline.grid run --steps 20 --seeds 0 1 --n-samples 200 --name smoke
    python -m pipeline.grid run --runner local --device cuda --jobs 9   # one GPU box without DVC
    python -m pipeline.grid status

Why the DVC queue (and not `matrix:` in dvc.yaml): `dvc repro` runs stages one at a time, while
`dvc queue start -j N` runs experiments in parallel workers; each cell stays an ordinary
experiment (`dvc exp show`, `dvc plots diff`) that reuses the cached prepare and evaluator stages.

Finished cells are found in MLflow (runs tagged grid.name / grid.cell / grid.seed with a final
FID) and are not queued again, so a second invocation, or one after an interruption, only runs what
is missing. Everything a worker needs travels as params (`-S`): queued experiments see neither
untracked files nor environment variables set at queue time.

`--runner local` runs the same cells without DVC: each in its own folder under .grid/<grid>/, as one
process that runs the train, sample and evaluate stages in turn, `--jobs` at a time, logging to the
same MLflow store. It is for machines where DVC's queue is not installed or costs more than the run
(a lent GPU box); the results are the same runs, tagged the same way.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from pipeline import tracking
from pipeline.config import Params, load_params, with_override
from pipeline.data import PREPARED_DIR
from pipeline.evaluator import EVALUATOR_FILE
from pipeline.errors import USER_ERRORS, UserError

log = logging.getLogger("grid")


@dataclass(frozen=True)
class Cell:
    values: tuple[tuple[str, object], ...]
    seed: int

    @property
    def label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.values)

    @property
    def exp_name(self) -> str:
        slug = "-".join(str(v) for _, v in self.values)
        return re.sub(r"[^A-Za-z0-9_-]+", "_", f"{slug}-s{self.seed}")


@dataclass(frozen=True)
class GridSpec:
    name: str
    axes: dict[str, list]
    seeds: list[int]
    steps: int
    n_samples: int
    jobs: int
    device: str = ""  # train.device for every run ("": as params.yaml says)
    ema_start: int = 0  # train.ema_start of params.yaml: a budget below it moves it (a smoke grid)
    eval_n: int = 0  # train.eval_n of params.yaml: a quick FID never draws more images than the final one

    @classmethod
    def from_params(cls, p: Params, **over) -> "GridSpec":
        a = p.ablation
        spec = dict(name=a.name, axes=a.axes, seeds=list(a.seeds), steps=a.steps, n_samples=a.n_samples,
                    jobs=a.jobs, ema_start=p.train.ema_start, eval_n=p.train.eval_n)
        spec.update({k: v for k, v in over.items() if v is not None})
        return cls(**spec)

    def cells(self) -> list[Cell]:
        """Seed by seed: contrasts pair the runs of one seed, so a grid stopped half-way (or spread over
        sessions and machines) leaves whole seeds, each run on one machine."""
        keys = list(self.axes)
        return [Cell(tuple(zip(keys, combo)), seed)
                for seed in self.seeds for combo in itertools.product(*(self.axes[k] for k in keys))]

    def overrides(self, cell: Cell, threads: int = 0) -> dict[str, object]:
        """The params of one cell x seed: axis values, seed, the grid's budget and its tag, and the CPU
        threads of each worker (0: train.threads as it is)."""
        over = {**dict(cell.values), "seed": cell.seed, "train.steps": self.steps,
                "train.eval_every": max(self.steps // 5, 1), "sample.n": self.n_samples,
                "evaluate.n_samples": self.n_samples, "mlflow.grid": self.name}
        if self.device:
            over["train.device"] = self.device
        if self.ema_start >= self.steps:  # a budget below the EMA's start (smoke grids): start it halfway
            over["train.ema_start"] = self.steps // 2
        if self.eval_n > self.n_samples:  # a smoke grid's few samples: its quick FIDs no larger
            over["train.eval_n"] = self.n_samples
        return {**over, "train.threads": threads} if threads else over


def threads_per_worker(p: Params, jobs: int) -> int:
    """CPU threads for each of `jobs` parallel workers: the cores shared out when train.threads is 0
    (all cores), since jobs x all-cores OpenMP pools spin against each other (measured: a training
    fell from 900 to 380 img/s beside another); train.threads as set otherwise."""
    if p.train.threads:
        return p.train.threads
    return max(1, (os.cpu_count() or 1) // jobs)


def _yaml_value(v: object) -> str:
    return json.dumps(v) if isinstance(v, (list, dict, bool)) or v is None else str(v)


def finished_cells(p: Params, grid: str) -> dict[tuple[str, int], str]:
    """(cell label, seed) -> run id of the grid's finished, evaluated runs in MLflow."""
    return {key: r.info.run_id for key, r in tracking.finished_grid_runs(p.mlflow.experiment, grid).items()}


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


RUNNERS = ("dvc", "local")


def run_grid(p: Params, spec: GridSpec, runner: str = "dvc") -> list[Cell]:
    """Runs the cells that have no finished run yet, spec.jobs at a time, with DVC's queue or the local
    runner, and waits. Returns the failed cells."""
    # every value must be valid, and the tracking store must answer, before anything is queued
    for cell in spec.cells():
        with_override(p, spec.overrides(cell))
    tracking.check_reachable(p.mlflow.connect_timeout_s)
    done = finished_cells(p, spec.name)
    todo = [c for c in spec.cells() if (c.label, c.seed) not in done]
    log.info("grid %r: %d cells x %d seeds, %d finished, %d to run with %d jobs (%s runner)",
             spec.name, len(spec.cells()) // len(spec.seeds), len(spec.seeds), len(spec.cells()) - len(todo),
             len(todo), spec.jobs, runner)
    if not todo:
        return []
    threads = threads_per_worker(p, spec.jobs)
    log.info("%d CPU thread(s) per worker%s", threads, f", train.device={spec.device}" if spec.device else "")
    if _wants_cuda(p, spec):
        check_gpu_room(spec.jobs)
    # the grid's parent run, before any of its runs: they nest under it in the MLflow UI
    parent = tracking.grid_parent_run(p.mlflow.experiment, spec.name, create=True)
    failed: list[Cell] = []
    try:
        failed = (_run_local(p, spec, todo, threads) if runner == "local"
                  else _run_queued(spec, todo, threads, p.mlflow.experiment))
    finally:
        _end_parent(parent, failed)
    return failed


def _end_parent(run_id: str, failed: list[Cell]) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking.tracking_uri())
    client.set_tag(run_id, "grid.failed_runs", str(len(failed)))
    client.set_terminated(run_id, "FAILED" if failed else "FINISHED")


def _wants_cuda(p: Params, spec: GridSpec) -> bool:
    device = spec.device or p.train.device
    if device == "cpu":
        return False
    import torch

    return torch.cuda.is_available()


# a bound per worker: its CUDA context, the compiled model and CUDA graphs' pools (measured on an H200,
# torch 2.11: 9 workers of the default model peaked at 11.8 GiB together, 1.3 GiB each)
GPU_GIB_PER_WORKER = 2.0


def gpu_room(free_bytes: int) -> int:
    """How many grid workers fit in `free_bytes` of GPU memory."""
    return int(free_bytes / 2**30 // GPU_GIB_PER_WORKER)


def check_gpu_room(jobs: int) -> None:
    """Refuses more workers than the GPU's free memory holds (each is its own CUDA context)."""
    import torch

    free, _ = torch.cuda.mem_get_info()
    room = gpu_room(free)
    if jobs > room:
        raise UserError(f"--jobs {jobs}: the GPU has {free / 2**30:.1f} GiB free, room for {room} workers at "
                        f"~{GPU_GIB_PER_WORKER:.0f} GiB each; lower --jobs (ablation.jobs)")
    log.info("GPU %s: %.1f GiB free for %d workers", torch.cuda.get_device_name(), free / 2**30, jobs)


DVC_POLL_S = 30.0  # `dvc exp show` costs ~1 s of CPU a call; the store's finished runs are one SQL query


def _run_queued(spec: GridSpec, todo: list[Cell], threads: int, experiment: str) -> list[Cell]:
    """Queues the cells as DVC experiments and runs them with `dvc queue start -j spec.jobs`. Progress:
    the store's finished runs every 5 s, DVC's experiment states (the word on success, failure and a
    stopped queue) every DVC_POLL_S and whenever the store has a run DVC has not yet called done."""
    from tqdm import tqdm

    # the shared stages once, in the workspace, so the queued experiments restore them from the cache
    log.info("reproducing the shared stages (prepare, train_evaluator)")
    res = subprocess.run(["dvc", "repro", "train_evaluator"], text=True)
    if res.returncode != 0:
        raise UserError("`dvc repro train_evaluator` failed; fix it before running the grid")
    names = {}
    for cell in todo:
        name = f"{spec.name}-{cell.exp_name}"
        _dvc("exp", "remove", name, check=False)  # a failed earlier attempt holds the name
        sets = [a for k, v in spec.overrides(cell, threads).items() for a in ("-S", f"{k}={_yaml_value(v)}")]
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
            in_store = tracking.finished_grid_runs(experiment, spec.name)
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


# ---------------------------------------------------------------- the local runner

LOCAL_DIR = Path(".grid")
# what every run reads from the shared stages; a run's folder links to them
SHARED_OUTPUTS = (PREPARED_DIR, EVALUATOR_FILE, Path("metrics/evaluator.json"))


def _ensure_shared_outputs(root: Path) -> None:
    """prepare and train_evaluator, once: through DVC where it is installed (so its cache knows them),
    otherwise by running the stages."""
    if all((root / path).exists() for path in SHARED_OUTPUTS):
        return
    log.info("reproducing the shared stages (prepare, train_evaluator)")
    if shutil.which("dvc"):
        cmds = [["dvc", "repro", "train_evaluator"]]
    else:
        cmds = [[sys.executable, "-m", f"stages.{s}"] for s in ("check_params", "prepare", "train_evaluator")]
    for cmd in cmds:
        if subprocess.run(cmd, cwd=root).returncode != 0:
            raise UserError(f"`{' '.join(cmd)}` failed; fix it before running the grid")


def _cell_folder(root: Path, p: Params, spec: GridSpec, cell: Cell, threads: int) -> Path:
    """A fresh folder holding the cell's params.yaml and links to the shared stages' outputs."""
    import yaml

    folder = root / LOCAL_DIR / spec.name / cell.exp_name
    shutil.rmtree(folder, ignore_errors=True)
    for path in SHARED_OUTPUTS:
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).symlink_to(root / path)
    params = with_override(p, spec.overrides(cell, threads))
    (folder / "params.yaml").write_text(yaml.safe_dump(params.to_dict(), sort_keys=False))
    return folder


def _run_local(p: Params, spec: GridSpec, todo: list[Cell], threads: int) -> list[Cell]:
    """Runs each cell as one process (`python -m pipeline.grid cell`) in its own folder, spec.jobs at a
    time. The processes log to the project's MLflow store (DVC_ROOT points them at it, as DVC does for
    its temporary copies) and resume from their checkpoints when the grid is run again."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm import tqdm

    root = Path.cwd().resolve()
    _ensure_shared_outputs(root)
    # every run records the commit the grid started from, even if HEAD moves while it runs
    # each worker's thread pools sized to its share of the cores: OpenMP (torch) and BLAS (numpy, scipy)
    env = {**os.environ, "DVC_ROOT": str(root), "OMP_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "SAGAN_GIT_COMMIT": tracking.git_commit(),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}

    def run_one(cell: Cell) -> tuple[Cell, int, Path, float]:
        folder = _cell_folder(root, p, spec, cell, threads)
        t0 = time.perf_counter()
        with open(folder / "run.log", "w") as out:
            rc = subprocess.run([sys.executable, "-m", "pipeline.grid", "cell"], cwd=folder, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**env, "SAGAN_RUN_NAME": f"{spec.name}-{cell.exp_name}"}).returncode
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


def run_cell() -> None:
    """train -> sample -> evaluate in the current folder, in one process: one interpreter start and one
    import of torch and MLflow per run instead of three."""
    import torch

    from stages import evaluate, sample, train

    p = load_params()
    if p.train.threads:
        torch.set_num_threads(p.train.threads)
    for stage in (train, sample, evaluate):
        stage.main(p)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s grid: %(message)s", datefmt="%H:%M:%S")
    ap = argparse.ArgumentParser(prog="python -m pipeline.grid", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["run", "status", "cell"],
                    help="run: run the missing cells and write the report; status: which cells are done; "
                         "cell: train, sample and evaluate the params.yaml of the current folder (the local "
                         "runner's worker)")
    ap.add_argument("--name", help="grid name (default: ablation.name)")
    ap.add_argument("--steps", type=int, help="train.steps per run (default: ablation.steps)")
    ap.add_argument("--seeds", type=int, nargs="+", help="seeds (default: ablation.seeds)")
    ap.add_argument("--n-samples", type=int, help="samples evaluated per run (default: ablation.n_samples)")
    ap.add_argument("--jobs", type=int, help="parallel experiments (default: ablation.jobs)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], help="train.device of every run "
                    "(default: params.yaml's)")
    ap.add_argument("--runner", choices=RUNNERS, default="dvc",
                    help="dvc: DVC's experiment queue (default); local: processes without DVC")
    ap.add_argument("--no-report", action="store_true", help="do not write reports/ablation.md")
    args = ap.parse_args(argv)
    try:
        if args.command == "cell":
            run_cell()
            return 0
        p = load_params()
        spec = GridSpec.from_params(p, name=args.name, steps=args.steps, seeds=args.seeds,
                                    n_samples=args.n_samples, jobs=args.jobs, device=args.device)
        # the spec itself is validated like params.yaml
        with_override(p, {"ablation.name": spec.name, "ablation.steps": spec.steps,
                          "ablation.seeds": spec.seeds, "ablation.n_samples": spec.n_samples,
                          "ablation.jobs": spec.jobs})
        if args.command == "status":
            done = finished_cells(p, spec.name)
            for cell in spec.cells():
                print(f"{'done ' if (cell.label, cell.seed) in done else 'to do'}  {cell.label}  seed {cell.seed}")
            return 0
        failed = run_grid(p, spec, args.runner)
        if not args.no_report:
            from pipeline.report import write_report

            path = write_report(p, spec.name, expected_seeds=spec.seeds)
            log.info("report: %s", path)
        if failed:
            log.error("%d runs failed; rerun the same command to retry them", len(failed))
            return 1
        return 0
    except USER_ERRORS as e:
        print(f"error (grid): {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
