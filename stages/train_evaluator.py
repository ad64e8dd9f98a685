"""DVC stage `train_evaluator`: the MNIST classifier that every experiment's metrics share, and the
real-data floor (held-out real images scored against real training images)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from pipeline.cli import run_stage
from pipeline.config import Params
from pipeline.data import load_prepared
from pipeline.evaluator import accuracy, embed, train_classifier
from pipeline.fileio import torch_save, write_json
from pipeline.metrics import evaluate_features

log = logging.getLogger("train_evaluator")

MODEL_FILE = Path("models/evaluator.pt")
METRICS_FILE = Path("metrics/evaluator.json")


def main(p: Params) -> None:
    torch.use_deterministic_algorithms(True, warn_only=True)
    data = load_prepared()
    model = train_classifier(data.x_train, data.y_train, p.evaluate.classifier)
    acc = accuracy(model, data.x_test, data.y_test)
    log.info("held-out accuracy %.4f on %d images", acc, len(data.x_test))
    # the floor: what real data scores, so every model's numbers are read beside it
    real_f, real_p = embed(model, data.x_test)
    train_f, train_p = embed(model, data.x_train)
    floor = evaluate_features(train_f, train_p, real_f, real_p, p.evaluate.k, p.evaluate.splits)
    torch_save(model.state_dict(), MODEL_FILE)
    write_json(METRICS_FILE, {
        "accuracy": round(acc, 5), "source": data.meta["source"], "n_train": len(data.x_train),
        "n_test": len(data.x_test),
        "floor": {k: (round(v, 5) if isinstance(v, float) else v) for k, v in floor.items()},
    })
    log.info("floor: FID %.3f, classifier score %.3f, precision %.3f, recall %.3f",
             floor["fid"], floor["classifier_score"], floor["precision"], floor["recall"])


if __name__ == "__main__":
    run_stage("train_evaluator", main)
