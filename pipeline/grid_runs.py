"""A grid's runs in the MLflow store: each cell x seed's finished run, the runs a lost process left open,
the parent run the grid's runs nest under. Used by the grid runners, the report and the record export;
no stage imports it (a change here leaves every stage's outputs up to date)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from pipeline import tracking
from pipeline.config import ParamsError, cell_label
from pipeline.store import setup, tracking_uri
from pipeline.tracking import GRID_PARENT_TAG


def run_cell(axes: Iterable[str], params: Mapping[str, str], tags: Mapping[str, str]) -> str:
    """A logged run's grid cell, from its params (MLflow's strings) by `cell_label`, so it matches the grid's
    label however its values were spelled; the `grid.cell` tag only where a param is missing."""
    try:
        return cell_label(axes, params)
    except (KeyError, ParamsError):
        return tags.get("grid.cell", "")


def finished_grid_runs(experiment: str, grid: str, axes: Iterable[str]) -> dict[tuple[str, int], Any]:
    """(cell label, seed) -> the latest FINISHED and evaluated (has `fid`) MLflow run of `grid`, whose
    axes are `axes`."""
    import mlflow

    exp_id = setup(experiment)
    client = mlflow.MlflowClient(tracking_uri())
    found = client.search_runs([exp_id], f"tags.`grid.name` = '{grid}' and attributes.status = 'FINISHED'",
                               max_results=5000, order_by=["attributes.start_time DESC"])
    runs: dict[tuple[str, int], Any] = {}
    for r in found:
        if "fid" in r.data.metrics:
            cell = run_cell(axes, r.data.params, r.data.tags)
            runs.setdefault((cell, int(r.data.tags.get("grid.seed", -1))), r)
    return runs


def end_lost_runs(experiment: str, grid: str) -> list[str]:
    """Marks KILLED the grid's unfinished runs once its runner has nothing in flight: still RUNNING, or
    FINISHED by the train stage but never evaluated (no `fid`). Their process ended before the run did (a
    node lost, a driver killed); the cell ran again, or will on the next invocation. Returns their ids."""
    import mlflow

    exp_id = setup(experiment)
    client = mlflow.MlflowClient(tracking_uri())
    found = client.search_runs([exp_id], f"tags.`grid.name` = '{grid}' and attributes.status != 'FAILED' and "
                                         f"attributes.status != 'KILLED'", max_results=5000)
    lost = [r for r in found if r.data.tags.get(GRID_PARENT_TAG) != "true"
            and (r.info.status == "RUNNING" or "fid" not in r.data.metrics)]
    for r in lost:
        client.set_tag(r.info.run_id, "grid.lost", "its process ended without ending the run (node lost or "
                                                   "process killed); the cell runs again")
        client.set_terminated(r.info.run_id, "KILLED")
    return [r.info.run_id for r in lost]


def grid_parent_run(experiment: str, grid: str, create: bool = False) -> str | None:
    """The run that groups a grid's runs in the MLflow UI (its runs nest under it): found by its tags,
    created by the grid runner before any of its runs start."""
    import mlflow

    found = tracking.grid_parent(experiment, grid)
    client = mlflow.MlflowClient(tracking_uri())
    if found:
        if create:  # the grid runs (again): its parent is running as long as it does
            client.update_run(found, status="RUNNING")
        return found
    if not create:
        return None
    exp_id = setup(experiment)
    run = client.create_run(exp_id, run_name=f"grid {grid}",
                            tags={**tracking.run_tags({GRID_PARENT_TAG: "true", "grid.name": grid}),
                                  **tracking.standard_tags("pipeline.grid")})
    return run.info.run_id
