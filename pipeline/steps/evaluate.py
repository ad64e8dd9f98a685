"""The work of DVC stage `evaluate` (entry point: stages/evaluate.py, whose docstring says what it does)."""
from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import numpy as np

from pipeline import tracking
from pipeline.config import Params
from pipeline.data import load_prepared
from pipeline.errors import UserError
from pipeline.evaluator import ARCHITECTURES, EVALUATOR_B_FILE, EVALUATOR_FILE, embed, load_evaluator, weights_sha256
from pipeline.fileio import atomic_path, write_json
from pipeline.memo import embed_reference
from pipeline.metrics import METRICS_VERSION, SCALARS, evaluate_draws, round_scalars
from pipeline.metrics.registry import DRAWS_ONLY, EVALUATE_ORDER
from pipeline.records.export import SAMPLES_DIR, save_journal_record, save_run_record

log = logging.getLogger("evaluate")

SAMPLES_FILE = Path("samples/samples.npz")
FLOOR_FILE = Path("metrics/evaluator.json")
FLOOR_B_FILE = Path("metrics/evaluator_b.json")
METRICS_FILE = Path("metrics/evaluate.json")
HIST_CSV = Path("plots/class_histogram.csv")
HIST_PNG = Path("plots/class_histogram.png")


def load_samples(path: Path, n: int) -> np.ndarray:
    """The first n generated images, uint8 (n, 28, 28) (n: evaluate.draws x evaluate.n_samples)."""
    if not path.exists():
        raise UserError(f"{path} is missing: run the sample stage first (`dvc repro sample`)")
    with np.load(path) as z:
        if "images" not in z:
            raise UserError(f"{path} has no `images` array (found: {', '.join(z.files)})")
        images = z["images"]
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise UserError(f"{path}: `images` must be uint8 (N, 28, 28), found {images.dtype} {images.shape}")
    if len(images) < n:
        raise UserError(f"evaluate.draws x evaluate.n_samples = {n} but {path} holds {len(images)} images; "
                        f"raise sample.n to at least {n} and rerun the sample stage, or lower evaluate.draws")
    return images[:n]


def load_floor(path: Path = FLOOR_FILE) -> dict:
    """The real-data floor of metrics/evaluator.json (or evaluator_b.json); {} when the file is missing."""
    if not path.exists():
        log.warning("%s is missing: no real-data floor in the report", path)
        return {}
    return json.loads(path.read_text()).get("floor", {})


def reference_sha256(data) -> str:
    """The checksum of the reference's images (prepare's meta.json; the held-out split's for data prepared by
    older code, which stood in for it)."""
    return data.meta.get("reference", {}).get("sha256") or data.meta.get("sha256", {}).get("x_test", "")


def write_histogram_csv(hist: list[int], path: Path) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["class", "count"])
            w.writerows(enumerate(hist))


def write_histogram_png(hist: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(range(10), hist, color="#4477aa")
    ax.axhline(sum(hist) / 10, color="gray", ls="--", lw=1, label="uniform")
    ax.set_xticks(range(10))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("generated images")
    ax.set_title(f"{sum(hist)} generated digits by evaluator class")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def score(evaluator, real_images: np.ndarray, images: np.ndarray, p: Params) -> dict:
    """Every metric of `images` (evaluate.draws draws of evaluate.n_samples, in order) against the reference
    `real_images` in one evaluator's features (pipeline.metrics.evaluate_draws)."""
    n = p.evaluate.n_samples
    real_f, real_p = embed_reference(evaluator, real_images)  # the same every run: kept by pipeline.memo
    fake_f, fake_p = embed(evaluator, images)
    # subsets and splits ordered by the images (the same bytes on any CPU), not by float features
    draws = [(fake_f[i:i + n], fake_p[i:i + n], images[i:i + n]) for i in range(0, p.evaluate.draws * n, n)]
    return evaluate_draws(real_f, real_p, draws, p.evaluate.k, p.evaluate.splits, real_keys=real_images)


# the answer first (pipeline/metrics/registry.py): evaluate.json's order, and what only the mean over draws has
FIRST, EXTRA = EVALUATE_ORDER, DRAWS_ONLY


def second_evaluator(real_images: np.ndarray, images: np.ndarray, p: Params) -> tuple[dict, dict]:
    """(evaluate.json's `evaluator_b` object, its MLflow metrics): the same metrics under evaluator B,
    its floor (metrics/evaluator_b.json), architecture and checksum."""
    model = load_evaluator(EVALUATOR_B_FILE, stage="train_evaluator_b")
    m = score(model, real_images, images, p)
    floor = load_floor(FLOOR_B_FILE)
    block = {**round_scalars(m, FIRST), "classes_covered": int(m["classes_covered"]),
             "class_histogram": m["class_histogram"], "floor": floor, "checksum": weights_sha256(EVALUATOR_B_FILE),
             "arch": next(name for name, cls in ARCHITECTURES.items() if type(model) is cls)}
    metrics = {f"evaluator_b.{k}": float(m[k]) for k in SCALARS + EXTRA}
    metrics |= {f"evaluator_b.floor.{k}": float(v) for k, v in floor.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return block, metrics


def _model_id(logger: tracking.RunLogger) -> str | None:
    """The run's logged generator (None: none was logged, or the server is away)."""
    if logger.offline:
        return None
    try:
        # the name pipeline.generator_model.NAME logs it under (importing that module would make the
        # attention kernel a dependency of this stage)
        return tracking.logged_model_id(logger.run_id, "generator", logger.client)
    except Exception as e:  # noqa: BLE001 - the scores matter more than their link to the model
        log.warning("could not find run %s's logged model (%s): its scores are logged to the run only",
                    logger.run_id, str(e).splitlines()[0][:200])
        return None


def main(p: Params) -> None:
    n = p.evaluate.n_samples
    images = load_samples(SAMPLES_FILE, n * p.evaluate.draws)
    floor = load_floor()
    evaluator = load_evaluator(EVALUATOR_FILE)
    data = load_prepared()
    t0 = time.perf_counter()
    m = score(evaluator, data.x_ref, images, p)
    seconds = time.perf_counter() - t0
    b, b_metrics = second_evaluator(data.x_ref, images, p)
    hist = m["class_histogram"]
    scalars = {k: float(m[k]) for k in SCALARS + EXTRA}
    write_json(METRICS_FILE, {**round_scalars(scalars, FIRST),
                              "classes_covered": int(m["classes_covered"]), "n_samples": n, "draws": m["draws"],
                              "per_draw": {k: [round(v, 5) for v in vs] for k, vs in m["per_draw"].items()},
                              "n_real": len(data.x_ref), "n_knn": m["n_knn"], "k": p.evaluate.k,
                              "splits": p.evaluate.splits, "metrics_version": METRICS_VERSION,
                              "class_histogram": hist, "floor": floor, "evaluator_b": b}, sort_keys=False)
    write_histogram_csv(hist, HIST_CSV)
    write_histogram_png(hist, HIST_PNG)
    log.info("FID %.3f ± %.3f (mean of %d draws of %d), classifier score %.3f ± %.3f", m["fid"], m["fid_se"],
             m["draws"], n, m["classifier_score"], m["classifier_score_se"])
    log.info("FID %.3f (floor %.3f), KID %.3f ± %.3f (floor %.3f), classifier score %.3f, precision %.3f, "
             "recall %.3f, density %.3f, coverage %.3f, %d classes, in %.1f s", m["fid"],
             floor.get("fid", float("nan")), m["kid"], m["kid_se"], floor.get("kid", float("nan")),
             m["classifier_score"], m["precision"], m["recall"], m["density"], m["coverage"], m["classes_covered"],
             seconds)
    log.info("evaluator B (%s): FID %.3f (floor %.3f), KID %.3f ± %.3f, classifier score %.3f, precision %.3f, "
             "recall %.3f", b["arch"], b["fid"], b["floor"].get("fid", float("nan")), b["kid"], b["kid_se"],
             b["classifier_score"], b["precision"], b["recall"])
    floor_metrics = {f"floor.{k}": float(v) for k, v in floor.items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool)}
    run_id = tracking.current_run_id()
    journal = tracking.read_journal(run_id)  # train's account of the run, which this stage completes
    with tracking.run_logger(run_id, end_status="FINISHED", journal=journal) as logger:
        # the scores also describe the run's logged generator: its page in the MLflow UI shows them
        logger.metrics({**scalars, "n_samples": n, **floor_metrics, **b_metrics}, model_id=_model_id(logger))
        # FID is only comparable under one evaluator: the report checks that every run shares this
        logger.tags({"evaluator.sha256": weights_sha256(EVALUATOR_FILE), "metrics.version": str(METRICS_VERSION),
                     "reference.sha256": reference_sha256(data), "evaluator_b.sha256": b["checksum"],
                     "evaluator_b.arch": str(b["arch"])})
        logger.artifact(METRICS_FILE, "metrics")
        logger.artifact(HIST_PNG, "evaluate")
    if p.mlflow.grid:  # the last stage of a grid's run: its record, from what the run logged, and its images
        if journal is not None:
            save_journal_record(p, run_id, logger.journal)
        else:  # trained before runs kept a journal: read back from the store it finished in
            save_run_record(run_id, None, SAMPLES_DIR)
    try:
        experiment_id = json.loads(tracking.RUN_FILE.read_text())["experiment_id"]
        log.info("MLflow: this run %s; all runs, best FID first: %s", tracking.ui_url(experiment_id, run_id),
                 tracking.ui_url(experiment_id))
    except (OSError, KeyError, ValueError):  # a link is a courtesy: never fail the stage over it
        pass
