"""DVC stage `evaluate`: FID and the classifier score (each the mean over evaluate.draws independent draws
of evaluate.n_samples generated images, with its standard error), KID (± its standard error),
precision/recall, density/coverage and the class histogram (the first draw's) against the reference,
MNIST's 10,000 t10k digits (pipeline.data.load_reference, stored in data/prepared). One draw of 10,000
moves FID by ~0.8 on a trained generator: the mean of 20 by ~0.2 (docs/grid.md, The instrument).

Writes metrics/evaluate.json (with the real-data floor copied from metrics/evaluator.json),
plots/class_histogram.csv and .png, and logs every scalar to the train stage's MLflow run (plain
names: fid, fid_se, kid, kid_se, classifier_score, classifier_score_se, draws, ...; the floor as floor.fid, ...; the reference's checksum as
tag reference.sha256). The same samples are scored again by
the second evaluator (models/evaluator_b.pt): evaluate.json's `evaluator_b` object, MLflow's
evaluator_b.fid, ..., evaluator_b.floor.fid, ... and tag evaluator_b.sha256. A grid's run is then
finished: its record goes to results/<grid>/ at the project root (pipeline.records), whichever runner
ran it."""
from __future__ import annotations

from pipeline import store
from pipeline.cli import run_stage
from pipeline.steps.evaluate import main


if __name__ == "__main__":
    run_stage("evaluate", main, preflight=store.preflight)
