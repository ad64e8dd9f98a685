"""The work of DVC stage `train_evaluator` (entry point: stages/train_evaluator.py, whose docstring says what it does)."""
from __future__ import annotations

import logging
from pathlib import Path

from pipeline.config import Params
from pipeline.data import load_prepared
from pipeline.evaluator import EVALUATOR_FILE, accuracy, embed, save_evaluator, train_classifier
from pipeline.fileio import write_json
from pipeline.metrics import METRICS_VERSION, evaluate_features, real_floor, round_scalars
from pipeline.seeding import deterministic_algorithms

log = logging.getLogger("train_evaluator")

MODEL_FILE = EVALUATOR_FILE
METRICS_FILE = Path("metrics/evaluator.json")


def train_with_floor(cfg, p: Params, model_file: Path, metrics_file: Path, name: str = "evaluator",
                     extra: dict | None = None) -> None:
    """Trains an evaluator with `cfg` (evaluate.classifier or evaluate.classifier_b), measures its held-out
    accuracy and its real-data floor, and writes the model and its metrics (plus `extra`)."""
    deterministic_algorithms()
    data = load_prepared()
    model = train_classifier(data.x_train, data.y_train, cfg, desc=name)
    acc = accuracy(model, data.x_test, data.y_test)
    log.info("%s: held-out accuracy %.4f on %d images", name, acc, len(data.x_test))
    ref_acc = accuracy(model, data.x_ref, data.y_ref)
    log.info("%s: accuracy %.4f on the %d reference digits", name, ref_acc, len(data.x_ref))
    ref_f, ref_p = embed(model, data.x_ref)
    floor = real_floor(ref_f, ref_p, data.x_ref, p.evaluate.k, p.evaluate.splits)
    train_f, train_p = embed(model, data.x_train)
    seen = evaluate_features(ref_f, ref_p, train_f, train_p, p.evaluate.k, p.evaluate.splits,
                             real_keys=data.x_ref, fake_keys=data.x_train)
    save_evaluator(model, model_file)
    write_json(metrics_file, {
        "accuracy": round(acc, 5),
        "reference_accuracy": round(ref_acc, 5),
        "reference": data.meta.get("reference", {}).get("source", "the held-out split (prepared by older code)"),
        "source": data.meta.get("source", "unknown"),
        "data_sha256": data.meta.get("sha256", {}).get("x_train", ""),
        "n_train": len(data.x_train),
        "n_test": len(data.x_test),
        # the estimators' bias at these sizes: two disjoint halves of the reference
        "floor": {**round_scalars(floor), "n_real": floor["n_real"], "n_fake": floor["n_fake"],
                  "fid_quarters": round(floor["fid_quarters"], 5), "n_quarters": floor["n_quarters"],
                  "fid_extrapolated": round(floor["fid_extrapolated"], 5), "n_extrapolated": floor["n_extrapolated"]},
        "floor_n_knn": floor["n_knn"],
        "floor_training_digits": {**round_scalars(seen), "n_real": len(data.x_ref), "n_fake": len(data.x_train)},
        "floor_class_histogram": floor["class_histogram"],
        "metrics_version": METRICS_VERSION,
        **(extra or {}),
    })
    log.info("%s floor (%d vs %d reference digits): FID %.3f (%.3f at %d vs %d), KID %.3f ± %.3f, "
             "classifier score %.3f, precision %.3f, recall %.3f, density %.3f, coverage %.3f", name, floor["n_real"],
             floor["n_fake"], floor["fid"], floor["fid_extrapolated"], floor["n_extrapolated"], floor["n_extrapolated"],
             floor["kid"], floor["kid_se"], floor["classifier_score"], floor["precision"],
             floor["recall"], floor["density"], floor["coverage"])
    log.info("%s: its %d training digits vs the reference: FID %.3f, KID %.3f ± %.3f", name, len(data.x_train),
             seen["fid"], seen["kid"], seen["kid_se"])


def main(p: Params) -> None:
    train_with_floor(p.evaluate.classifier, p, MODEL_FILE, METRICS_FILE)
