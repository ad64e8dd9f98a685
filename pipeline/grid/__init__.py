"""The ablation grid: every cell x seed of params.yaml's `ablation:` as one run, in parallel, then the
report. The command and its runners: pipeline/grid/cli.py (`python -m pipeline.grid --help`)."""
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
