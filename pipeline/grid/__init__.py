"""The ablation grid in one command: every cell x seed of params.yaml's `ablation:` as one run, in
parallel, then the report.

    python -m pipeline.grid run                       # DVC's queue (make grid)
    python -m pipeline.grid run --steps 20 --seeds 0 1 --n-samples 200 --name smoke
    python -m pipeline.grid run --runner local --device cuda --jobs 9   # one GPU box without DVC
    python -m pipeline.grid run --runner ray --address HEAD:6379        # a Ray cluster (docs/scale.md)
    python -m pipeline.grid status

Finished cells are found in MLflow (runs tagged grid.name / grid.cell / grid.seed with a final FID)
and are not run again, so a second invocation, or one after an interruption, only runs what is
missing. The runners (one module each, behind core.run_grid):
- dvc_queue: each run a queued DVC experiment (`dvc queue start -j N`), an ordinary `dvc exp show` entry;
- local: each run one process in .grid/<grid>/<cell>/, `--jobs` at a time, without DVC;
- ray_cluster: each run one Ray task, here or on a cluster, with nothing shared but the tracking server.
"""
from pipeline.grid.cell import SHARED_OUTPUTS, run_cell
from pipeline.grid.core import RUNNERS, finished_cells, run_grid
from pipeline.grid.dvc_queue import kill_lingering_workers, queue_processes, stop_workers
from pipeline.grid.gpu import GPU_GIB_PER_WORKER, check_gpu_room, gpu_room, gpu_share
from pipeline.grid.local import LOCAL_DIR
from pipeline.grid.spec import Cell, GridSpec, threads_per_worker


def main(argv=None) -> int:
    from pipeline.grid.cli import main as cli_main

    return cli_main(argv)


__all__ = ["GPU_GIB_PER_WORKER", "LOCAL_DIR", "RUNNERS", "SHARED_OUTPUTS", "Cell", "GridSpec", "check_gpu_room",
           "finished_cells", "gpu_room", "gpu_share", "kill_lingering_workers", "main", "queue_processes",
           "run_cell", "run_grid", "stop_workers", "threads_per_worker"]
