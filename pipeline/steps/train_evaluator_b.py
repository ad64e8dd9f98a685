"""The work of DVC stage `train_evaluator_b` (entry point: stages/train_evaluator_b.py, whose docstring says what it does)."""
from __future__ import annotations

from pathlib import Path

from pipeline.config import Params
from pipeline.evaluator import ARCHITECTURES, EVALUATOR_B_FILE
from pipeline.steps.train_evaluator import train_with_floor

MODEL_FILE = EVALUATOR_B_FILE
METRICS_FILE = Path("metrics/evaluator_b.json")


def main(p: Params) -> None:
    cfg = p.evaluate.classifier_b
    train_with_floor(cfg, p, MODEL_FILE, METRICS_FILE, name="evaluator B",
                     extra={"arch": cfg.arch, "features": ARCHITECTURES[cfg.arch].features_dim})
