"""The grid's runs as the report sees them: GridRun; load_runs, which reads them from the MLflow store;
load_records, which reads them from the grid's run records (results/<grid>/); merge_runs, both together."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pipeline import grid_runs, tracking
from pipeline.config import Params, ParamsError, label_value
from pipeline.errors import UserError
from pipeline.records.format import grid_folder, read_records, thin


FULL = "full."  # prefix of full-size checkpoint evaluations: full.fid, full.classifier_score, ...


@dataclass
class GridRun:
    run_id: str
    cell: str
    seed: int
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    fid_curve: list[tuple[int, float]] = field(default_factory=list)
    gamma_curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # "gamma.g14" -> curve
    start_ms: int | None = None
    end_ms: int | None = None
    # full-size evaluations at checkpoints (record curves `full.<metric>`, MLflow metric history of the same
    # name; train.full_eval_at): what the drift test (stats.drift_tost) needs
    metric_curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    def axis(self, key: str) -> str:
        """This run's value of `key`, spelled as cell labels spell it (pipeline.config.label_value)."""
        if key not in self.params:
            return "?"
        try:
            return label_value(key, self.params[key])
        except ParamsError:
            return self.params[key]

    @property
    def identity(self) -> str:
        """The run this is: a run imported into another store (pipeline.run_import) is its original."""
        return self.tags.get("imported.run_id") or self.run_id


def load_runs(p: Params, grid: str) -> list[GridRun]:
    """The latest finished, evaluated run of each cell x seed of `grid`, with its quick-FID and gamma
    histories (thinned as the run records are, so both sources give the report the same curves)."""
    import mlflow

    found = grid_runs.finished_grid_runs(p.mlflow.experiment, grid, p.ablation.axes)
    client = mlflow.MlflowClient(tracking.tracking_uri())
    runs: dict[tuple[str, int], GridRun] = {}
    def history(run_id: str, metric: str) -> list[tuple[int, float]]:
        return thin(sorted((m.step, m.value) for m in client.get_metric_history(run_id, metric)))

    for key, r in found.items():
        rid = r.info.run_id
        gammas = {k: history(rid, k) for k in sorted(r.data.metrics) if k.startswith("gamma.")}
        full = {k[len(FULL):]: history(rid, k) for k in sorted(r.data.metrics) if k.startswith(FULL)}
        runs[key] = GridRun(rid, key[0], key[1], dict(r.data.metrics), dict(r.data.params), dict(r.data.tags),
                            history(rid, "fid_quick"), gammas, r.info.start_time, r.info.end_time, full)
    return sorted(runs.values(), key=lambda g: (g.cell, g.seed))


def run_of_record(record: dict[str, Any], axes: Iterable[str] = ()) -> GridRun:
    """A run record (pipeline.records) as the report sees a run; its cell labelled from its params by the
    grid's `axes` (as the grid labels it), where given."""
    def curve(points: list) -> list[tuple[int, float]]:
        return [(int(step), float(value)) for step, value in points]

    curves = record["curves"]
    cell = grid_runs.run_cell(axes, record["params"], {"grid.cell": record["cell"]}) if axes else record["cell"]
    return GridRun(record["run_id"], cell, int(record["seed"]), dict(record["metrics"]),
                   dict(record["params"]), dict(record["tags"]), curve(curves.get("fid_quick", [])),
                   {k: curve(v) for k, v in sorted(curves.items()) if k.startswith("gamma.")},
                   record.get("start_ms"), record.get("end_ms"),
                   {k[len(FULL):]: curve(v) for k, v in sorted(curves.items()) if k.startswith(FULL)})


def load_records(grid: str, results: Path, axes: Iterable[str] = ()) -> list[GridRun]:
    """Every run record of `grid` in results/<grid>/ (all of them: merge_runs picks one per cell x seed)."""
    runs = []
    for path, record in read_records(grid_folder(grid, results)):
        if record["grid"] != grid:
            raise UserError(f"{path} is a record of grid {record['grid']!r}, not {grid!r}: move it to "
                            f"{grid_folder(record['grid'], results)}/")
        runs.append(run_of_record(record, axes))
    return runs


def merge_runs(store: list[GridRun], records: list[GridRun]) -> list[GridRun]:
    """The store's runs and the records' together: one copy per run (the store's, which a converted record
    can only lack things of), then per cell x seed the latest start, as load_runs picks (a record without
    a start counts as the oldest)."""
    by_run: dict[str, GridRun] = {}
    for r in [*store, *records]:
        by_run.setdefault(r.identity, r)
    latest: dict[tuple[str, int], GridRun] = {}
    for r in by_run.values():
        key = (r.cell, r.seed)
        if key not in latest or (r.start_ms or 0) > (latest[key].start_ms or 0):
            latest[key] = r
    return sorted(latest.values(), key=lambda g: (g.cell, g.seed))
