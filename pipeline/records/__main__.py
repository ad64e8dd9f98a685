"""`python -m pipeline.records export|convert`: write run records (see pipeline.records)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline.errors import USER_ERRORS


def _label(path: Path) -> str:
    """The path as the record names its source: relative to the project root when inside it."""
    from pipeline import tracking

    try:
        return path.resolve().relative_to(tracking.project_root()).as_posix()
    except ValueError:
        return str(path)


def export_grid(experiment: str, grid: str, results: Path, axes) -> list[Path]:
    """The records of `grid`'s finished runs in the store (the latest of each cell x seed, as the report
    picks them), written to results/<grid>/."""
    import mlflow

    from pipeline import grid_runs, tracking
    from pipeline.records.export import record_of
    from pipeline.records.format import grid_folder, write_record

    client = mlflow.MlflowClient(tracking.tracking_uri())
    folder = grid_folder(grid, results)
    return [write_record(record_of(run, client), folder)
            for _, run in sorted(grid_runs.finished_grid_runs(experiment, grid, axes).items())]


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s records: %(message)s", datefmt="%H:%M:%S")
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.records",
        description="export: the records of a grid's finished runs in the MLflow store (MLFLOW_TRACKING_URI, "
                    "default sqlite:///mlflow.db at the project root); grid runs write their own at their "
                    "end, so this is for older runs or a run whose end reached the store late. convert: records "
                    "from a published report's ablation.json (and the ablation.md beside it) whose store is "
                    "gone; each names in `missing` what the report did not keep.")
    ap.add_argument("command", choices=["export", "convert"])
    ap.add_argument("report", nargs="?", type=Path, help="convert: the ablation.json")
    ap.add_argument("--grid", help="export: the grid (default: params ablation.name); convert: the grid the "
                                   "records belong to (default: the report's)")
    ap.add_argument("--note", default="", help="convert: a sentence every record carries (where its runs came from)")
    ap.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                    help="convert: a tag every run had that the report does not show (repeatable), e.g. "
                         "machine.cpu_class=avx512; say in --note where it comes from")
    ap.add_argument("--results", type=Path, help="folder of the grids' record folders (default: results/ at "
                                                  "the project root)")
    args = ap.parse_args(argv)
    try:
        from pipeline import tracking
        from pipeline.errors import UserError
        from pipeline.records.format import RESULTS_DIR, grid_folder, write_record

        results = args.results or tracking.project_root() / RESULTS_DIR
        if args.command == "export":
            from pipeline.config import load_params

            p = load_params()
            grid = args.grid or p.ablation.name
            paths = export_grid(p.mlflow.experiment, grid, results, p.ablation.axes)
            print(f"{len(paths)} record(s) of grid {grid!r} in {grid_folder(grid, results)}")
            return 0
        if args.report is None:
            raise UserError("convert needs the report: `python -m pipeline.records convert reports/ablation.json`")
        from pipeline.records.convert import convert

        bad = [t for t in args.tag if "=" not in t]
        if bad:
            raise UserError(f"--tag {bad[0]!r}: give KEY=VALUE, e.g. --tag machine.cpu_class=avx512")
        records = convert(args.report, args.grid, _label(args.report), args.note,
                          dict(t.split("=", 1) for t in args.tag))
        folder = grid_folder(records[0]["grid"], results)
        for record in records:
            write_record(record, folder)
        print(f"{len(records)} record(s) converted from {args.report} into {folder}")
        return 0
    except USER_ERRORS as e:
        print(f"error (records): {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
