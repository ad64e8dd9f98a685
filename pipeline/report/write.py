"""Writing a grid's report to disk (ablation.md, ablation.json, ablation_files/ under report_dir) from the
MLflow store, the grid's run records, or both, and the command line `python -m pipeline.report`."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Sequence

from pipeline import tracking
from pipeline.config import Params
from pipeline.fileio import atomic_dir, write_json, write_text
from pipeline.records.format import RESULTS_DIR, grid_folder
from pipeline.report.analysis import analyze, budget_of
from pipeline.report.budget import runs_at_budget
from pipeline.report.formatting import _slug
from pipeline.report.json_summary import summary
from pipeline.report.markdown import render_analysis
from pipeline.report.runs import load_records, load_runs, merge_runs

log = logging.getLogger("report")

REPORT_DIR = Path("reports")
SOURCES = ("both", "store", "records")


def report_dir(p: Params, grid: str, out_dir: Path = REPORT_DIR) -> Path:
    """reports/ for the params' grid (the published report), reports/<grid>/ for any other."""
    return out_dir if grid == p.ablation.name else out_dir / _slug(grid)


def store_available(p: Params) -> bool:
    """Whether the MLflow store is there to read, without creating it: a local SQLite file that exists, or
    a server that answers (within mlflow.connect_timeout_s)."""
    from pipeline.errors import UserError

    uri = tracking.tracking_uri()
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).exists()
    try:
        tracking.check_reachable(p.mlflow.connect_timeout_s, uri)
    except UserError as e:
        log.warning("%s: the report is built without the store", e)
        return False
    return True


def _grid_runs(p: Params, grid: str, chosen: str, available: bool, results: Path):
    """(store runs, record runs, merged) of one grid from the chosen source."""
    store = load_runs(p, grid) if chosen != "records" and available else []
    records = load_records(grid, results, p.ablation.axes) if chosen != "store" else []
    return store, records, merge_runs(store, records)


def write_report(p: Params, grid: str | None = None, out_dir: Path = REPORT_DIR,
                 expected_seeds: Sequence[int] | None = None, source: str | None = None,
                 results: Path | None = None) -> Path:
    """Writes ablation.md, ablation.json and ablation_files/ of `grid` (default: ablation.name) into
    report_dir(...) and returns the markdown's path. The runs come from `source`: `store` (the MLflow
    store), `records` (results/<grid>/ under `results`, default the project's results/), `both` (merged,
    one copy per run: the default). The grids of `ablation.replicate_with` come from the same source, for
    the Replication section. With neither runs in the store nor records, an existing report is kept. Sample
    images come from the store when it has them, else from the report's last render (ablation_files/), so
    a clone without the store rewrites the committed report unchanged from the records."""
    import mlflow

    grid = grid or p.ablation.name
    target = report_dir(p, grid, Path(out_dir))
    md = target / "ablation.md"
    results = Path(results) if results is not None else tracking.project_root() / RESULTS_DIR
    chosen = source or "both"
    if chosen not in SOURCES:
        raise ValueError(f"source {chosen!r}: one of {', '.join(SOURCES)}")
    # `store` reads (and creates) the store as it always did; the others only one that is there
    available = chosen == "store" or store_available(p)
    store, records, runs = _grid_runs(p, grid, chosen, available, results)
    if md.exists() and not runs:
        log.warning("no finished runs of grid %r in the MLflow store %s nor records in %s: kept the existing %s. "
                    "To regenerate it, run the grid (`make grid`) or point MLFLOW_TRACKING_URI at the store that "
                    "produced it.", grid, tracking.tracking_uri(), grid_folder(grid, results), md)
        return md
    analysis = analyze(p, grid, runs, expected_seeds)
    if grid == p.ablation.name:
        budget = budget_of(analysis.primary_runs)
        for other in p.ablation.replicate_with:
            if other != grid:
                # a longer grid (the pilot) is compared at the primary's budget, from its checkpoints
                other_runs = _grid_runs(p, other, chosen, available, results)[2]
                shorter = runs_at_budget(other_runs, budget)
                # judged at the published grid's margins (a share resolves against its reference cell)
                analysis.replications[other] = analyze(p, other, shorter or other_runs, margins=analysis.margins)
                analysis.replications[other].read_at = budget if shorter else None
    client = mlflow.MlflowClient(tracking.tracking_uri()) if available else None
    target.mkdir(parents=True, exist_ok=True)
    with atomic_dir(target / "ablation_files") as files:
        text = render_analysis(analysis, files, client, previous=target / "ablation_files")
    write_json(target / "ablation.json", summary(analysis))
    write_text(md, text)
    from_store = {r.run_id for r in store}
    log.info("wrote %s from %d runs (%d from the store, %d from run records)", md, len(runs),
             sum(r.run_id in from_store for r in runs), sum(r.run_id not in from_store for r in runs))
    return md


def main(argv: list[str] | None = None) -> int:
    import argparse

    from pipeline.config import load_params
    from pipeline.errors import USER_ERRORS

    logging.basicConfig(level=logging.INFO, format="%(asctime)s report: %(message)s", datefmt="%H:%M:%S")
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.report",
        description="Write the ablation report (ablation.md, ablation.json, ablation_files/) of a grid from "
                    "its finished runs in the MLflow store (MLFLOW_TRACKING_URI, default sqlite:///mlflow.db "
                    "at the repository root), from its run records in git (results/<grid>/), or from both. "
                    "The grid of params.yaml `ablation.name` is published to reports/, any other grid to "
                    "reports/<name>/.")
    ap.add_argument("--grid", help="grid name, as the runs' tag grid.name (default: params ablation.name)")
    ap.add_argument("--seeds", type=int, nargs="+",
                    help="seeds the grid should have, for the list of missing runs (default: params "
                         "ablation.seeds for the params' grid, the seeds in the store for another grid)")
    ap.add_argument("--out", type=Path, default=REPORT_DIR,
                    help="folder for the report (default: reports/; another grid goes to a subfolder of it)")
    ap.add_argument("--source", choices=SOURCES,
                    help="where the runs come from: both (default) = the store's runs and the records in "
                         "results/<grid>/, one copy per run id, the store's first; store = the MLflow store alone; "
                         "records = results/<grid>/ alone (a fresh clone: no store needed)")
    ap.add_argument("--results", type=Path,
                    help="folder of the grids' run records (default: results/ at the project root)")
    args = ap.parse_args(argv)
    try:
        write_report(load_params(), args.grid, out_dir=args.out, expected_seeds=args.seeds, source=args.source,
                     results=args.results)
    except USER_ERRORS as e:
        print(f"error (report): {e}", file=sys.stderr)
        return 2
    return 0
