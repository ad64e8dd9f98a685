"""DVC stage `train_evaluator`: the MNIST classifier that every experiment's metrics share, and the
real-data floor. Depends on the prepared data and evaluate.{classifier,k,splits} only, so it runs
once per dataset, never per GAN experiment. (stages/train_evaluator_b.py trains the second evaluator
through `train_with_floor` too.)

The floor is what real digits score: the held-out images in the role of generated samples, against
the training images as reference. (The evaluate stage's reference is the held-out split; here it
cannot be, so the training split stands in; held-out images, like generated ones, were not seen by
the classifier.) Read a model's numbers beside it: no generator should beat it by much.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from pipeline.cli import run_stage
from pipeline.config import Params
from pipeline.data import load_prepared
from pipeline.evaluator import EVALUATOR_FILE, accuracy, embed, save_evaluator, train_classifier
from pipeline.fileio import write_json
from pipeline.metrics import METRICS_VERSION, SCALARS, evaluate_features

log = logging.getLogger("train_evaluator")

MODEL_FILE = EVALUATOR_FILE
METRICS_FILE = Path("metrics/evaluator.json")


def train_with_floor(cfg, p: Params, model_file: Path, metrics_file: Path, name: str = "evaluator",
                     extra: dict | None = None) -> None:
    """Trains an evaluator with `cfg` (evaluate.classifier or evaluate.classifier_b), measures its held-out
    accuracy and its real-data floor, and writes the model and its metrics (plus `extra`)."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    data = load_prepared()
    model = train_classifier(data.x_train, data.y_train, cfg, desc=name)
    acc = accuracy(model, data.x_test, data.y_test)
    log.info("%s: held-out accuracy %.4f on %d images", name, acc, len(data.x_test))
    test_f, test_p = embed(model, data.x_test)
    train_f, train_p = embed(model, data.x_train)
    floor = evaluate_features(train_f, train_p, test_f, test_p, p.evaluate.k, p.evaluate.splits,
                              real_keys=data.x_train, fake_keys=data.x_test)
    save_evaluator(model, model_file)
    write_json(metrics_file, {
        "accuracy": round(acc, 5),
        "source": data.meta.get("source", "unknown"),
        "data_sha256": data.meta.get("sha256", {}).get("x_train", ""),
        "n_train": len(data.x_train),
        "n_test": len(data.x_test),
        "floor": {k: round(float(floor[k]), 5) if isinstance(floor[k], float) else floor[k] for k in SCALARS},
        "floor_n_knn": floor["n_knn"],
        "floor_class_histogram": floor["class_histogram"],
        "metrics_version": METRICS_VERSION,
        **(extra or {}),
    })
    log.info("%s floor: FID %.3f, classifier score %.3f, precision %.3f, recall %.3f, density %.3f, coverage %.3f",
             name, floor["fid"], floor["classifier_score"], floor["precision"], floor["recall"], floor["density"],
             floor["coverage"])


def main(p: Params) -> None:
    train_with_floor(p.evaluate.classifier, p, MODEL_FILE, METRICS_FILE)


if __name__ == "__main__":
    run_stage("train_evaluator", main)
