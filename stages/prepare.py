"""DVC stage `prepare`: MNIST from `data.source` into data/prepared/ (see pipeline/data.py)."""
from pipeline.cli import run_stage
from pipeline.data import prepare

if __name__ == "__main__":
    run_stage("prepare", lambda params: prepare(params))
