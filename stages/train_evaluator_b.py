"""DVC stage `train_evaluator_b`: the second evaluator (evaluate.classifier_b: another architecture and
seed, the same training split) and its real-data floor, as train_evaluator makes the first: the evaluate
stage scores every run's samples with both, and the report checks each verdict under both.

Writes models/evaluator_b.pt and metrics/evaluator_b.json (evaluator.json's fields, plus `arch` and
`features`, the feature size its FID is computed in)."""
from __future__ import annotations

from pipeline.cli import run_stage
from pipeline.steps.train_evaluator_b import main


if __name__ == "__main__":
    run_stage("train_evaluator_b", main)
