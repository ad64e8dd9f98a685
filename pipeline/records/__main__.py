"""`python -m pipeline.records export`: write the run records of a grid's runs in the MLflow store, and their
sample images (see pipeline.records)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline.errors import USER_ERRORS


def export_grid(experiment: str, grid: str, results: Path, axes) -> list[Path]:
    """The records of `grid`'s finished runs in the store (the latest of each cell x seed), written to
    results/<grid>/, each with the run's sample images beside it where the store has them."""
    import mlflow

    from pipeline import grid_runs, tracking
    from pipeline.records.export import download_images, record_of
    from pipeline.records.format import grid_folder, write_record

    client = mlflow.MlflowClient(tracking.tracking_uri())
    folder = grid_folder(grid, results)
    paths = []
    for _, run in sorted(grid_runs.finished_grid_runs(experiment, grid, axes).items()):
        paths.append(write_record(record_of(run, client), folder))
        download_images(client, run.info.run_id, paths[-1])
    return paths


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s records: %(message)s", datefmt="%H:%M:%S")
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.records",
        description="export: the records of a grid's finished runs in the MLflow store (MLFLOW_TRACKING_URI, "
                    "default sqlite:///mlflow.db at the project root), each with its samples/grid.png and "
                    "attention.png beside it where the store has them; grid runs write their own at their "
                    "end, so this is for runs made before runs kept their journal.")
    ap.add_argument("command", choices=["export"])
    ap.add_argument("--grid", help="the grid (default: params ablation.name)")
    ap.add_argument("--results", type=Path, help="folder of the grids' record folders (default: results/ at "
                                                  "the project root)")
    args = ap.parse_args(argv)
    try:
        from pipeline import store
        from pipeline.config import load_params
        from pipeline.records.format import RESULTS_DIR, grid_folder

        results = args.results or store.project_root() / RESULTS_DIR
        p = load_params()
        grid = args.grid or p.ablation.name
        paths = export_grid(p.mlflow.experiment, grid, results, p.ablation.axes)
        print(f"{len(paths)} record(s) of grid {grid!r} in {grid_folder(grid, results)}")
        return 0
    except USER_ERRORS as e:
        print(f"error (records): {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
