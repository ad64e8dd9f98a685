"""Running a grid, whichever runner: validate every cell, skip the finished ones (found in MLflow), open
the grid's parent run, hand the rest to the runner, close the parent. A runner is one module with
`run(p, spec, todo, threads, **options) -> failed cells` (pipeline.grid.dvc_queue, .local, .ray_cluster):
a fourth engine (SLURM, Kubernetes) is one new module here and one line in RUNNERS."""
from __future__ import annotations

import importlib
import logging

from pipeline import grid_runs, tracking
from pipeline.config import Params, with_override
from pipeline.grid.batch import check_one_batch, skipped_fields, tags_here
from pipeline.grid.gpu import check_gpu_room, wants_cuda
from pipeline.grid.spec import Cell, GridSpec, threads_per_worker

log = logging.getLogger("grid")

RUNNERS = {"dvc": "pipeline.grid.dvc_queue", "local": "pipeline.grid.local", "ray": "pipeline.grid.ray_cluster"}


def finished_cells(p: Params, grid: str) -> dict[tuple[str, int], str]:
    """(cell label, seed) -> run id of the grid's finished, evaluated runs in MLflow."""
    found = grid_runs.finished_grid_runs(p.mlflow.experiment, grid, p.ablation.axes)
    return {key: r.info.run_id for key, r in found.items()}


def run_grid(p: Params, spec: GridSpec, runner: str = "dvc", allow_new_batch: bool = False,
             **options) -> list[Cell]:
    """Runs the cells that have no finished run yet with the named runner, and waits. Returns the failed
    cells. Refuses, before anything runs, where they would be another batch than the finished runs
    (pipeline.grid.batch) unless `allow_new_batch`. `options` go to the runner (ray: address, max_retries)."""
    # every value must be valid, and the tracking store must answer, before anything is queued
    for cell in spec.cells():
        with_override(p, spec.overrides(cell))
    tracking.check_reachable(p.mlflow.connect_timeout_s)
    done = grid_runs.finished_grid_runs(p.mlflow.experiment, spec.name, p.ablation.axes)
    todo = [c for c in spec.cells() if (c.label, c.seed) not in done]
    log.info("grid %r: %d cells x %d seeds, %d finished, %d to run with %d jobs (%s runner)",
             spec.name, len(spec.cells()) // len(spec.seeds), len(spec.seeds), len(spec.cells()) - len(todo),
             len(todo), spec.jobs, runner)
    if not todo:
        return []
    if done and not allow_new_batch:
        check_one_batch(spec.name, [r.data.tags for r in done.values()], tags_here(p, spec),
                        machine_too=runner != "ray", skip=skipped_fields(p.ablation.axes))
    threads = threads_per_worker(p, spec.jobs)
    log.info("%d CPU thread(s) per worker%s", threads, f", train.device={spec.device}" if spec.device else "")
    if runner != "ray" and wants_cuda(p, spec):  # on Ray each GPU's memory is shared out per task
        check_gpu_room(spec.jobs)
    module = importlib.import_module(RUNNERS[runner])
    if hasattr(module, "preflight"):  # what the runner must refuse, before anything is written
        module.preflight(p, spec, threads, **options)
    # the grid's parent run, before any of its runs: they nest under it in the MLflow UI
    parent = grid_runs.grid_parent_run(p.mlflow.experiment, spec.name, create=True)
    failed: list[Cell] = []
    try:
        failed = module.run(p, spec, todo, threads, **options)
        if runner != "dvc":  # nothing of this grid is in flight now: a run still RUNNING was lost
            lost = grid_runs.end_lost_runs(p.mlflow.experiment, spec.name)
            if lost:
                log.warning("%d run(s) left RUNNING by lost attempts marked KILLED: %s", len(lost), ", ".join(lost))
    finally:
        _end_parent(parent, failed)
    return failed


def _end_parent(run_id: str, failed: list[Cell]) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking.tracking_uri())
    client.set_tag(run_id, "grid.failed_runs", str(len(failed)))
    client.set_terminated(run_id, "FAILED" if failed else "FINISHED")
