"""DVC stage `train_evaluator_b`: the second evaluator (evaluate.classifier_b: another architecture and
seed, the same training split) and its real-data floor, as train_evaluator makes the first: the evaluate
stage scores every run's samples with both, and the report checks each verdict under both.

Writes models/evaluator_b.pt and metrics/evaluator_b.json (evaluator.json's fields, plus `arch` and
`features`, the feature size its FID is computed in)."""
from __future__ import annotations

from pathlib import Path

from pipeline.cli import run_stage
from pipeline.config import Params
from pipeline.evaluator import ARCHITECTURES, EVALUATOR_B_FILE
from stages.train_evaluator import train_with_floor

MODEL_FILE = EVALUATOR_B_FILE
METRICS_FILE = Path("metrics/evaluator_b.json")


def main(p: Params) -> None:
    cfg = p.evaluate.classifier_b
    train_with_floor(cfg, p, MODEL_FILE, METRICS_FILE, name="evaluator B",
                     extra={"arch": cfg.arch, "features": ARCHITECTURES[cfg.arch].features_dim})


if __name__ == "__main__":
    run_stage("train_evaluator_b", main)
