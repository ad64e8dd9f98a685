"""DVC stage `train_evaluator`: the MNIST classifier that every experiment's metrics share, and the
real-data floor. Depends on the prepared data and evaluate.{classifier,k,splits} only, so it runs
once per dataset, never per GAN experiment. (stages/train_evaluator_b.py trains the second evaluator
through `train_with_floor` too.)

The floor is what real digits score against real digits: the t10k reference split into two disjoint
halves of 5,000 (pipeline/metrics/floor.py), neither seen by the evaluator, so each number is its
estimator's bias at those sizes (KID ~0, unbiased; FID > 0, also extrapolated to 10,000 vs 10,000).
Read a model's numbers beside it: no generator should beat it by much. `floor_training_digits` scores
the evaluator's own training digits against the whole reference: what its overfit (and the shift
between MNIST's training and test writers) adds, best read in KID, whose value does not depend on the
sizes.
"""
from __future__ import annotations

from pipeline.cli import run_stage
from pipeline.steps.train_evaluator import main


if __name__ == "__main__":
    run_stage("train_evaluator", main)
