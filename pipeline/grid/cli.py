"""`python -m pipeline.grid run | status | cell` (the console script `sagan-grid`): the ablation grid in
one command, every cell x seed of params.yaml's `ablation:` as one run, in parallel, then the report.

    python -m pipeline.grid run                       # DVC's queue (make grid)
    python -m pipeline.grid run --steps 20 --seeds 0 1 --n-samples 200 --draws 2 --no-log-model --name smoke
    python -m pipeline.grid run --runner local --device cuda --jobs 9   # one GPU box without DVC
    python -m pipeline.grid run --runner ray --address HEAD:6379        # a Ray cluster (docs/scale.md)
    python -m pipeline.grid status

An axis may turn any params key, the budget's included (`train.steps: [5000, 10000]`: the cell's value
wins over --steps); the seed's axis is `ablation.seeds`. Finished cells are found in MLflow (runs of the
grid with a final FID, their cell read from their params) and are not run again, so a second
invocation, or one after an interruption, only runs what is missing. The runners (one module each,
behind core.run_grid):
- dvc_queue: each run a queued DVC experiment (`dvc queue start -j N`), an ordinary `dvc exp show` entry;
- local: each run one process in .grid/<grid>/<cell>/, `--jobs` at a time, without DVC;
- ray_cluster: each run one Ray task, here or on a cluster, with nothing shared but the tracking server.
"""
from __future__ import annotations

import argparse
import logging
import sys

from pipeline.config import load_params, with_override
from pipeline.errors import USER_ERRORS
from pipeline.grid.cell import run_cell
from pipeline.grid.core import RUNNERS, finished_cells, run_grid
from pipeline.grid.spec import GridSpec

log = logging.getLogger("grid")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s grid: %(message)s", datefmt="%H:%M:%S")
    ap = argparse.ArgumentParser(prog="python -m pipeline.grid", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["run", "status", "cell"],
                    help="run: run the missing cells and write the report; status: which cells are done; "
                         "cell: train, sample and evaluate the params.yaml of the current folder (the local "
                         "and Ray runners' worker)")
    ap.add_argument("--name", help="grid name (default: ablation.name)")
    ap.add_argument("--steps", type=int, help="train.steps per run (default: ablation.steps)")
    ap.add_argument("--seeds", type=int, nargs="+", help="seeds (default: ablation.seeds)")
    ap.add_argument("--n-samples", type=int, help="samples evaluated per run (default: ablation.n_samples)")
    ap.add_argument("--draws", type=int, help="evaluate.draws of every run: FID's draws of --n-samples each (default: "
                    "params' evaluate.draws; a smoke grid's fewer draws sample and evaluate in less time)")
    ap.add_argument("--no-log-model", dest="log_model", action="store_false", default=None,
                    help="do not log each run's generator as an MLflow model (mlflow.log_model: false; ~6 CPU-s a "
                    "run on Zen 3, a third of a smoke grid's run)")
    ap.add_argument("--jobs", type=int, help="parallel runs on this machine; each gets cores / jobs threads "
                    "(default: ablation.jobs)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], help="train.device of every run "
                    "(default: params.yaml's)")
    ap.add_argument("--runner", choices=list(RUNNERS), default="dvc",
                    help="dvc: DVC's experiment queue (default); local: processes without DVC; ray: Ray tasks, "
                         "on this machine or a cluster (--address)")
    ap.add_argument("--address", help="ray: the cluster to join (HOST:PORT of `ray start --head`, or auto); "
                    "default: RAY_ADDRESS, else a Ray instance on this machine")
    ap.add_argument("--max-retries", type=int, default=3,
                    help="ray: attempts for a run whose node or worker was lost (default 3)")
    ap.add_argument("--allow-new-batch", action="store_true",
                    help="run the missing cells even where this machine or checkout would make them another batch "
                         "than the finished runs (another CPU class, precision, commit or evaluator); the report "
                         "then splits the grid by batch")
    ap.add_argument("--no-report", action="store_true", help="do not write reports/ablation.md")
    args = ap.parse_args(argv)
    try:
        if args.command == "cell":
            run_cell()
            return 0
        p = load_params()
        spec = GridSpec.from_params(p, name=args.name, steps=args.steps, seeds=args.seeds,
                                    n_samples=args.n_samples, jobs=args.jobs, device=args.device, draws=args.draws,
                                    log_model=args.log_model)
        # the spec itself is validated like params.yaml, and its runs carry it: their params (and records) say
        # this grid's name, budget, seeds and margins, not params.yaml's (spec.overrides carries the same keys to
        # every runner). The report reads params.yaml's own grid from `p` (another grid's goes to reports/<name>/)
        grid_p = with_override(p, spec.ablation_block())
        if args.command == "status":
            done = finished_cells(p, spec.name)
            for cell in spec.cells():
                print(f"{'done ' if (cell.label, cell.seed) in done else 'to do'}  {cell.label}  seed {cell.seed}")
            return 0
        options = {"address": args.address, "max_retries": args.max_retries} if args.runner == "ray" else {}
        failed = run_grid(grid_p, spec, args.runner, allow_new_batch=args.allow_new_batch, **options)
        if not args.no_report:
            from pipeline.report import write_report

            path = write_report(p, spec.name, expected_seeds=spec.seeds)
            log.info("report: %s", path)
        if failed:
            log.error("%d run(s) failed: %s; rerun the same command to retry them", len(failed),
                      ", ".join(f"{c.label} seed {c.seed}" for c in failed))
            return 1
        return 0
    except USER_ERRORS as e:
        print(f"error (grid): {e}", file=sys.stderr)
        return 2
