"""DVC stage `sample`: sample.n images from a fixed latent seed, a grid, the training GIF and
attention maps, all logged to the train stage's MLflow run."""
from __future__ import annotations

from pipeline import store
from pipeline.cli import run_stage
from pipeline.steps.sample import main


if __name__ == "__main__":
    run_stage("sample", main, preflight=store.preflight)
