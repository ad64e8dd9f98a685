"""The grid's runs as the report sees them: GridRun, and load_records, which reads them from the grid's run
records (results/<grid>/), the report's only source."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from pipeline import grid_runs
from pipeline.config import ParamsError, label_value
from pipeline.errors import UserError
from pipeline.records.format import grid_folder, read_records


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
    record: Path | None = field(default=None, compare=False)  # the run record it was read from (load_records)

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
    """The runs of `grid` from its run records in results/<grid>/: per cell x seed the latest start (a
    record without one counts as the oldest), one copy per run (a record of an imported copy of a run is
    that run); each knows its record's file (GridRun.record), beside which its images lie."""
    runs = []
    for path, record in read_records(grid_folder(grid, results)):
        if record["grid"] != grid:
            raise UserError(f"{path} is a record of grid {record['grid']!r}, not {grid!r}: move it to "
                            f"{grid_folder(record['grid'], results)}/")
        runs.append(replace(run_of_record(record, axes), record=path))
    return latest_per_cell(runs)


def latest_per_cell(runs: Iterable[GridRun]) -> list[GridRun]:
    """One copy per run (the first), then per cell x seed the latest start (a run without one counts as
    the oldest), sorted by cell and seed."""
    by_run: dict[str, GridRun] = {}
    for r in runs:
        by_run.setdefault(r.identity, r)
    latest: dict[tuple[str, int], GridRun] = {}
    for r in by_run.values():
        key = (r.cell, r.seed)
        if key not in latest or (r.start_ms or 0) > (latest[key].start_ms or 0):
            latest[key] = r
    return sorted(latest.values(), key=lambda g: (g.cell, g.seed))
