"""DVC stage `evaluate`: FID, classifier score, precision/recall, density/coverage and the class
histogram of evaluate.n_samples generated images against the held-out real images."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np

from pipeline import tracking
from pipeline.cli import run_stage
from pipeline.config import Params
from pipeline.data import load_prepared
from pipeline.errors import UserError
from pipeline.evaluator import embed, load_evaluator
from pipeline.fileio import atomic_path, write_json
from pipeline.metrics import evaluate_features

log = logging.getLogger("evaluate")

METRICS_FILE = Path("metrics/evaluate.json")
HIST_CSV = Path("plots/class_histogram.csv")
HIST_PNG = Path("plots/class_histogram.png")


def histogram_png(hist: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(range(10), hist, color="#4477aa")
    ax.axhline(sum(hist) / 10, color="gray", ls="--", lw=1, label="uniform")
    ax.set_xticks(range(10))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("generated images")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def main(p: Params) -> None:
    n = p.evaluate.n_samples
    with np.load("samples/samples.npz") as z:
        images = z["images"]
    if len(images) < n:
        raise UserError(f"evaluate.n_samples = {n} but samples/samples.npz holds {len(images)} images; "
                        f"raise sample.n to at least {n}")
    floor_file = Path("metrics/evaluator.json")
    floor = json.loads(floor_file.read_text())["floor"] if floor_file.exists() else {}
    evaluator = load_evaluator()
    data = load_prepared()
    real_f, real_p = embed(evaluator, data.x_test)
    fake_f, fake_p = embed(evaluator, images[:n])
    m = evaluate_features(real_f, real_p, fake_f, fake_p, p.evaluate.k, p.evaluate.splits)
    hist = m.pop("class_histogram")
    scalars = {k: float(v) for k, v in m.items()}
    write_json(METRICS_FILE, {**{k: round(v, 5) for k, v in scalars.items()}, "n_samples": n,
                              "n_real": len(data.x_test), "class_histogram": hist,
                              "floor": {k: v for k, v in floor.items() if k != "class_histogram"}})
    with atomic_path(HIST_CSV) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["class", "count"])
            w.writerows(enumerate(hist))
    histogram_png(hist, HIST_PNG)
    log.info("FID %.3f (floor %.3f), classifier score %.3f, precision %.3f, recall %.3f, classes %d",
             m["fid"], floor.get("fid", float("nan")), m["classifier_score"], m["precision"], m["recall"],
             m["classes_covered"])
    floor_metrics = {f"floor.{k}": float(v) for k, v in floor.items() if isinstance(v, (int, float))}
    with tracking.run_logger(tracking.current_run_id(), end_status="FINISHED") as logger:
        logger.metrics({**scalars, **floor_metrics})
        logger.artifact(METRICS_FILE, "metrics")
        logger.artifact(HIST_PNG, "evaluate")


if __name__ == "__main__":
    run_stage("evaluate", main)
