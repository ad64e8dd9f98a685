"""Writing a grid's report to disk (ablation.md, ablation.json, ablation_files/ under report_dir) and the
command line `python -m pipeline.report`."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Sequence

from pipeline import tracking
from pipeline.config import Params
from pipeline.fileio import atomic_dir, write_json, write_text
from pipeline.report.analysis import analyze
from pipeline.report.formatting import _slug
from pipeline.report.json_summary import summary
from pipeline.report.markdown import render_analysis
from pipeline.report.runs import load_runs

log = logging.getLogger("report")

REPORT_DIR = Path("reports")


def report_dir(p: Params, grid: str, out_dir: Path = REPORT_DIR) -> Path:
    """reports/ for the params' grid (the published report), reports/<grid>/ for any other."""
    return out_dir if grid == p.ablation.name else out_dir / _slug(grid)


def write_report(p: Params, grid: str | None = None, out_dir: Path = REPORT_DIR,
                 expected_seeds: Sequence[int] | None = None) -> Path:
    """Writes ablation.md, ablation.json and ablation_files/ of `grid` (default: ablation.name) into
    report_dir(...) and returns the markdown's path. An existing report is kept when the store has no
    run of the grid (a fresh clone's `dvc repro` must not replace the published report with an empty one)."""
    import mlflow

    grid = grid or p.ablation.name
    target = report_dir(p, grid, Path(out_dir))
    md = target / "ablation.md"
    runs = load_runs(p, grid)
    if not runs and md.exists():
        log.warning("no finished runs of grid %r in the MLflow store %s: kept the existing %s. To regenerate "
                    "it, run the grid (`make grid`) or point MLFLOW_TRACKING_URI at the store that produced it.",
                    grid, tracking.tracking_uri(), md)
        return md
    analysis = analyze(p, grid, runs, expected_seeds)
    client = mlflow.MlflowClient(tracking.tracking_uri())
    target.mkdir(parents=True, exist_ok=True)
    with atomic_dir(target / "ablation_files") as files:
        text = render_analysis(analysis, files, client)
    write_json(target / "ablation.json", summary(analysis))
    write_text(md, text)
    log.info("wrote %s from %d runs", md, len(runs))
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
                    "at the repository root). The grid of params.yaml `ablation.name` is published to "
                    "reports/, any other grid to reports/<name>/.")
    ap.add_argument("--grid", help="grid name, as the runs' tag grid.name (default: params ablation.name)")
    ap.add_argument("--seeds", type=int, nargs="+",
                    help="seeds the grid should have, for the list of missing runs (default: params "
                         "ablation.seeds for the params' grid, the seeds in the store for another grid)")
    ap.add_argument("--out", type=Path, default=REPORT_DIR,
                    help="folder for the report (default: reports/; another grid goes to a subfolder of it)")
    args = ap.parse_args(argv)
    try:
        write_report(load_params(), args.grid, out_dir=args.out, expected_seeds=args.seeds)
    except USER_ERRORS as e:
        print(f"error (report): {e}", file=sys.stderr)
        return 2
    return 0
