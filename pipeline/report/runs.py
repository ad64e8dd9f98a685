"""The grid's runs as the report sees them: GridRun, and load_runs, which reads them from the MLflow store."""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline import tracking
from pipeline.config import Params


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

    def axis(self, key: str) -> str:
        return self.params.get(key, "?")


def load_runs(p: Params, grid: str) -> list[GridRun]:
    """The latest finished, evaluated run of each cell x seed of `grid`, with its quick-FID and gamma
    histories."""
    import mlflow

    found = tracking.finished_grid_runs(p.mlflow.experiment, grid)
    client = mlflow.MlflowClient(tracking.tracking_uri())
    runs: dict[tuple[str, int], GridRun] = {}
    def history(run_id: str, metric: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(run_id, metric))

    for key, r in found.items():
        rid = r.info.run_id
        gammas = {k: history(rid, k) for k in sorted(r.data.metrics) if k.startswith("gamma.")}
        runs[key] = GridRun(rid, key[0], key[1], dict(r.data.metrics), dict(r.data.params), dict(r.data.tags),
                            history(rid, "fid_quick"), gammas, r.info.start_time, r.info.end_time)
    return sorted(runs.values(), key=lambda g: (g.cell, g.seed))
