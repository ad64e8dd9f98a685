"""Writing a grid's report to disk (ablation.md, ablation.json, ablation_files/ under report_dir) from the
grid's run records, and the command line `python -m pipeline.report`."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Sequence

from pipeline.config import Params
from pipeline.fileio import atomic_dir, write_json, write_text
from pipeline.records.format import RESULTS_DIR, grid_folder
from pipeline.report.analysis import analyze, budget_of
from pipeline.report.budget import runs_at_budget
from pipeline.report.formatting import _slug
from pipeline.report.json_summary import summary
from pipeline.report.markdown import render_analysis
from pipeline.report.runs import load_records
from pipeline.store import project_root

log = logging.getLogger("report")

REPORT_DIR = Path("reports")


def report_dir(p: Params, grid: str, out_dir: Path = REPORT_DIR) -> Path:
    """reports/ for the params' grid (the published report), reports/<grid>/ for any other."""
    return out_dir if grid == p.ablation.name else out_dir / _slug(grid)


def write_report(p: Params, grid: str | None = None, out_dir: Path = REPORT_DIR,
                 expected_seeds: Sequence[int] | None = None, results: Path | None = None) -> Path:
    """Writes ablation.md, ablation.json and ablation_files/ of `grid` (default: ablation.name) into
    report_dir(...) and returns the markdown's path. The runs are the grid's run records in
    results/<grid>/ under `results` (default: the project's results/), as are those of the grids of
    `ablation.replicate_with` (the Replication section); the MLflow store is not read. Without records,
    an existing report is kept. Each cell's sample images come from beside its run's record, else from
    the report's last render (ablation_files/)."""
    grid = grid or p.ablation.name
    target = report_dir(p, grid, Path(out_dir))
    md = target / "ablation.md"
    results = Path(results) if results is not None else project_root() / RESULTS_DIR
    runs = load_records(grid, results, p.ablation.axes)
    if not runs:
        log.warning("no run records of grid %r in %s%s. A grid's runs write their records as they finish "
                    "(`make grid`, `python -m pipeline.grid run`); runs in an MLflow store from before records "
                    "existed get theirs with `python -m pipeline.records export --grid %s`.", grid,
                    grid_folder(grid, results), f": kept the existing {md}" if md.exists() else "", grid)
        if md.exists():
            return md
    analysis = analyze(p, grid, runs, expected_seeds)
    if grid == p.ablation.name:
        budget = budget_of(analysis.primary_runs)
        for other in p.ablation.replicate_with:
            if other != grid:
                # a longer grid (the pilot) is compared at the primary's budget, from its checkpoints
                other_runs = load_records(other, results, p.ablation.axes)
                shorter = runs_at_budget(other_runs, budget)
                # judged at the published grid's margins (a share resolves against its reference cell)
                analysis.replications[other] = analyze(p, other, shorter or other_runs, margins=analysis.margins)
                analysis.replications[other].read_at = budget if shorter else None
    target.mkdir(parents=True, exist_ok=True)
    with atomic_dir(target / "ablation_files") as files:
        text = render_analysis(analysis, files, previous=target / "ablation_files")
    write_json(target / "ablation.json", summary(analysis))
    write_text(md, text)
    log.info("wrote %s from %d run records", md, len(runs))
    return md


def main(argv: list[str] | None = None) -> int:
    import argparse

    from pipeline.config import load_params
    from pipeline.errors import USER_ERRORS

    logging.basicConfig(level=logging.INFO, format="%(asctime)s report: %(message)s", datefmt="%H:%M:%S")
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.report",
        description="Write the ablation report (ablation.md, ablation.json, ablation_files/) of a grid from "
                    "its run records in git (results/<grid>/: each finished grid run writes its own; `python -m "
                    "pipeline.records export` writes those of older runs in an MLflow store). The grid of "
                    "params.yaml `ablation.name` is published to reports/, any other grid to reports/<name>/.")
    ap.add_argument("--grid", help="grid name, as the runs' tag grid.name (default: params ablation.name)")
    ap.add_argument("--seeds", type=int, nargs="+",
                    help="seeds the grid should have, for the list of missing runs (default: params "
                         "ablation.seeds for the params' grid, the seeds of its records for another grid)")
    ap.add_argument("--out", type=Path, default=REPORT_DIR,
                    help="folder for the report (default: reports/; another grid goes to a subfolder of it)")
    ap.add_argument("--results", type=Path,
                    help="folder of the grids' run records (default: results/ at the project root)")
    args = ap.parse_args(argv)
    try:
        write_report(load_params(), args.grid, out_dir=args.out, expected_seeds=args.seeds, results=args.results)
    except USER_ERRORS as e:
        print(f"error (report): {e}", file=sys.stderr)
        return 2
    return 0
