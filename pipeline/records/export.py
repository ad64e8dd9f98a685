"""Run records: the record of one finished grid run, written by the evaluate stage at the end of every grid
run (whichever runner ran it) from the run's own journal (pipeline.tracking.new_journal), and the record of
a run in the MLflow store (`python -m pipeline.records export`, for runs made before runs kept a journal);
each with the run's sample images beside it (format.IMAGES)."""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pipeline import store
from pipeline.fileio import atomic_path
from pipeline.records.format import IMAGES, RESULTS_DIR, SCHEMA_VERSION, grid_folder, image_path, thin, write_record

log = logging.getLogger("records")

# MLflow's own bookkeeping that can grow large (a logged model's history); any tag over MAX_TAG_CHARS
# (a long note) is left out too, and named in the record's `missing`
DROPPED_TAGS = ("mlflow.log-model.history",)
MAX_TAG_CHARS = 1000


def is_finished_grid_run(run) -> bool:
    """What the report counts (pipeline.grid_runs.finished_grid_runs): a grid's run, FINISHED, with a final FID."""
    return (run.info.status == "FINISHED" and "fid" in run.data.metrics
            and bool(run.data.tags.get("grid.name")) and "grid.seed" in run.data.tags)


def record_of(run, client) -> dict[str, Any]:
    """The record of a finished grid run: everything the report reads from the store, curves thinned."""
    def history(metric: str) -> list[list]:
        points = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, metric))
        return [list(p) for p in thin(points)]

    tags = run.data.tags
    kept = {k: v for k, v in tags.items() if k not in DROPPED_TAGS and len(v) <= MAX_TAG_CHARS}
    curves = {"fid_quick": history("fid_quick")}
    curves |= {k: history(k) for k in sorted(run.data.metrics) if k.startswith(("gamma.", "full."))}
    start, end = run.info.start_time, run.info.end_time
    return {
        "schema": SCHEMA_VERSION,
        "source": "mlflow run",
        "grid": tags["grid.name"],
        "cell": tags.get("grid.cell", ""),
        "seed": int(tags["grid.seed"]),
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "experiment": client.get_experiment(run.info.experiment_id).name,
        "start_ms": start,
        "end_ms": end,
        "wall_s": (end - start) / 1000 if start and end else None,  # the run: train, sample and evaluate
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "curves": curves,
        "tags": kept,
        "missing": sorted(f"tags.{k}" for k in tags if k not in kept),
    }


SAMPLES_DIR = Path("samples")  # a run's images, in its workspace (the sample stage's outputs)


def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst, suffix=dst.suffix) as tmp:
        shutil.copyfile(src, tmp)


def save_images(record: Path, samples: Path = SAMPLES_DIR) -> list[Path]:
    """Copies the run's images (samples/grid.png, and attention.png where it has attention) beside its
    `record` (format.image_path); returns their paths."""
    copied = []
    for name in IMAGES:
        if (Path(samples) / name).exists():
            _copy(Path(samples) / name, image_path(record, name))
            copied.append(image_path(record, name))
    return copied


def download_images(client, run_id: str, record: Path) -> list[Path]:
    """The run's images from its MLflow artifacts (samples/grid.png, samples/attention.png) beside its
    `record`; best effort: an image the store lacks (no attention, an artifact store gone) is skipped."""
    copied = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in IMAGES:
            try:
                src = Path(client.download_artifacts(run_id, f"samples/{name}", tmp))
            except Exception:  # noqa: BLE001 - not logged, or not readable: the record stands without it
                continue
            _copy(src, image_path(record, name))
            copied.append(image_path(record, name))
    return copied


def save_run_record(run_id: str, root: Path | None, samples: Path) -> Path | None:
    """Writes the record of grid run `run_id` to <root>/results/<grid>/ (root, where None: the project root,
    which DVC_ROOT names inside a queued experiment's temporary copy), with the images in `samples` (the
    run's own samples/ folder) beside it.
    Only for a finished, evaluated run as the store holds it; otherwise (or when the store cannot be read)
    a warning and None: a record is never written for an unfinished run, and a missing record never fails
    the run that finished."""
    import mlflow

    try:
        client = mlflow.MlflowClient(store.tracking_uri())
        run = client.get_run(run_id)
        if not is_finished_grid_run(run):
            log.warning("run %s is not a finished, evaluated grid run in the store (%s): no record written",
                        run_id, run.info.status)
            return None
        path = write_record(record_of(run, client),
                            grid_folder(run.data.tags["grid.name"], (root or store.project_root()) / RESULTS_DIR))
        save_images(path, samples)
    except Exception as e:  # noqa: BLE001 - the run itself is done; its record can be written later
        log.warning("no record written for run %s (%s): once the store has it, write it with "
                    "`python -m pipeline.records export --grid NAME`", run_id, str(e).splitlines()[0][:200])
        return None
    log.info("run record: %s", path)
    return path


def record_of_journal(p, run_id: str, journal: dict[str, Any], end_ms: int | None = None) -> dict[str, Any]:
    """The record of a finished grid run from its params and journal: the fields record_of reads from the
    store, the same values (a test compares the two on real runs)."""
    import time

    from pipeline.tracking import param_strings

    tags = journal["tags"]
    kept = {k: v for k, v in tags.items() if k not in DROPPED_TAGS and len(v) <= MAX_TAG_CHARS}
    curves = {"fid_quick": journal["curves"].get("fid_quick", []),
              **{k: v for k, v in journal["curves"].items() if k.startswith(("gamma.", "full."))}}
    start, end = journal["start_ms"], end_ms or journal.get("end_ms") or int(time.time() * 1000)
    return {
        "schema": SCHEMA_VERSION,
        "source": "run",
        "grid": tags.get("grid.name", p.mlflow.grid),
        "cell": tags.get("grid.cell", p.grid_cell()),
        "seed": p.seed,
        "run_id": run_id,
        "run_name": journal["run_name"],
        "experiment": p.mlflow.experiment,
        "start_ms": start,
        "end_ms": end,
        "wall_s": (end - start) / 1000 if start and end else None,
        "params": param_strings(p),
        "metrics": {k: value for k, (_, value) in sorted(journal["metrics"].items())},
        "curves": {k: [list(pt) for pt in thin(sorted((int(s), v) for s, v in points))]
                   for k, points in sorted(curves.items())},
        "tags": kept,
        "missing": sorted(f"tags.{k}" for k in tags if k not in kept),
    }


def save_journal_record(p, run_id: str, journal: dict[str, Any], root: Path | None = None,
                        samples: Path = SAMPLES_DIR) -> Path:
    """Writes the record of grid run `run_id` (record_of_journal) to <root>/results/<grid>/ (root: the project
    root, which DVC_ROOT names inside a queued experiment's temporary copy), with the images in `samples`
    beside it."""
    record = record_of_journal(p, run_id, journal)
    path = write_record(record, grid_folder(record["grid"], (root or store.project_root()) / RESULTS_DIR))
    save_images(path, samples)
    log.info("run record: %s", path)
    return path
