"""DVC stage `train`: trains the SAGAN on data/prepared, tracked in MLflow, resumable.

Runs as `python -m stages.train`, or on several processes with
`torchrun --nproc_per_node=N -m stages.train` (gloo on CPU, nccl on GPU).
"""
from __future__ import annotations

from pipeline import store
from pipeline.cli import run_stage
from pipeline.steps.train import main


if __name__ == "__main__":
    run_stage("train", main, preflight=store.preflight)
