"""Rebuild MLflow runs from the folders the grid's local runner leaves (.grid/<grid>/<cell>/), or from the
run records kept in git (results/<grid>/*.json, pipeline.records).

A run folder holds everything its MLflow run held: params.yaml, metrics/train.json and evaluate.json,
the per-step losses and the quick-FID curve (plots/*.csv), the sample grid and attention maps. So a
store that was lost, or left behind on a machine that could not send it back (a lent GPU box), is
rebuilt from the folders:

    python -m pipeline.run_import .grid/default --tag machine.gpu="NVIDIA H200"

Each imported run is tagged `imported.from` and `imported.run_id` (the original run's id, from
models/run.json); a folder whose original run is already in the store is skipped. What the folders do
not keep is not invented: per-step γ histories (only the final γ), and tags such as versions unless
given with --tag.

A record becomes a FINISHED run with the record's params, final metrics, curves (quick FID and γ, as
thinned in the record), tags, name, times and the sample images beside it (samples/grid.png,
attention.png), so the MLflow UI shows it (the report reads the records themselves); it nests under
the grid's parent run when the store has one. A record whose run is already in the store (the same run
id, or a run imported from it) is skipped. A record without times
(converted from a published report) gets the time of the import.

    python -m pipeline.run_import results/default results/default-h200
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from pipeline import grid_runs, tracking
from pipeline.config import parse_params
from pipeline.errors import USER_ERRORS, UserError
from pipeline.records.format import IMAGES, image_path, read_record

log = logging.getLogger("run_import")

ARTIFACTS = {"samples/grid.png": "samples", "samples/attention.png": "samples",
             "samples/training.gif": "samples", "metrics/train.json": "metrics",
             "metrics/evaluate.json": "metrics", "plots/train_losses.csv": "plots",
             "plots/class_histogram.png": "evaluate"}
LOSS_KEYS = ("d_loss", "g_loss", "d_real", "d_fake")


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _mtime_ms(path: Path) -> int:
    return int(path.stat().st_mtime * 1000)


def folder_metrics(folder: Path, timestamp: int) -> list:
    """The run's metrics as MLflow logged them: per-step losses and quick FID, final values, evaluation."""
    from mlflow.entities import Metric

    train = json.loads((folder / "metrics/train.json").read_text())
    evaluate = json.loads((folder / "metrics/evaluate.json").read_text())
    out = [Metric(k, float(row[k]), timestamp, int(row["step"]))
           for row in _read_csv(folder / "plots/train_losses.csv") for k in LOSS_KEYS]
    out += [Metric("fid_quick", float(row["fid_quick"]), timestamp, int(row["step"]))
            for row in _read_csv(folder / "plots/train_fid.csv")]
    step = int(train["steps"])
    final = {k: v for k, v in train.items() if k.startswith("gamma.")}
    final |= {"final.images_per_s": train["images_per_s"], "final.wall_s": train["wall_s"]}
    final |= {k: v for k, v in evaluate.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("n_real", "n_knn", "k", "splits")}
    final |= {f"floor.{k}": v for k, v in evaluate.get("floor", {}).items()
              if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out += [Metric(k, float(v), timestamp, step if k.startswith(("gamma.", "final.")) else 0)
            for k, v in final.items()]
    return out


def import_folder(folder: Path, extra_tags: dict[str, str]) -> str | None:
    """Creates one FINISHED run from a run folder; returns its id (None when already imported)."""
    import mlflow
    from mlflow.entities import Param

    for needed in ("params.yaml", "metrics/train.json", "metrics/evaluate.json"):
        if not (folder / needed).exists():
            raise UserError(f"{folder} is not a finished run folder: {needed} is missing")
    p = parse_params(yaml.safe_load((folder / "params.yaml").read_text()))
    original = json.loads((folder / "models/run.json").read_text())["run_id"] \
        if (folder / "models/run.json").exists() else ""
    exp_id = tracking.setup(p.mlflow.experiment)
    client = mlflow.MlflowClient(tracking.tracking_uri())
    if original and client.search_runs([exp_id], f"tags.`imported.run_id` = '{original}'", max_results=1):
        log.info("%s: run %s is already in the store", folder, original)
        return None
    train = json.loads((folder / "metrics/train.json").read_text())
    tags = {f"runtime.{k}": str(v) for k, v in train.get("runtime", {}).items()}
    meta_path = folder / "data/prepared/meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        tags |= {"data.source": meta["source"], "data.sha256": meta["sha256"]["x_train"]}
    if p.mlflow.grid:
        tags |= {"grid.name": p.mlflow.grid, "grid.cell": p.grid_cell(), "grid.seed": str(p.seed)}
    tags |= {"imported.from": str(folder), "imported.run_id": original, **extra_tags}
    start = _mtime_ms(folder / "params.yaml")
    end = _mtime_ms(folder / "metrics/evaluate.json")
    name = f"{p.mlflow.grid}-{folder.name}" if p.mlflow.grid else folder.name
    run = client.create_run(exp_id, start_time=start, run_name=name, tags=tags)
    run_id = run.info.run_id
    flat = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in p.flat().items()]
    metrics = folder_metrics(folder, end)
    for i in range(0, len(flat), 100):  # MLflow's batch limits: 100 params, 1000 metrics
        client.log_batch(run_id, params=flat[i:i + 100], synchronous=True)
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000], synchronous=True)
    for rel, artifact_path in ARTIFACTS.items():
        if (folder / rel).exists():
            client.log_artifact(run_id, str(folder / rel), artifact_path)
    client.set_tag(run_id, "mlflow.note.content", f"imported from the run folder {folder}")
    client.set_terminated(run_id, "FINISHED", end_time=end)
    return run_id


def _in_store(client, exp_id: str, run_id: str, original: str) -> bool:
    """Whether run `run_id`, or a run imported from its `original`, is in the store already."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
        return True
    except MlflowException:
        return bool(client.search_runs([exp_id], f"tags.`imported.run_id` = '{original}'", max_results=1))


def record_metrics(record: dict, timestamp: int) -> list:
    """A record's curves as metric histories, and its final metrics each as the latest value of its key
    (at the curve's last step when it has one, a repeated point left out, so the history reads back as
    the record's curve)."""
    from mlflow.entities import Metric

    curves = record["curves"]
    out = [Metric(k, float(v), timestamp, int(step)) for k, points in curves.items() for step, v in points]
    for k, v in record["metrics"].items():
        points = curves.get(k) or []
        if not points:
            out.append(Metric(k, float(v), timestamp, 0))
        elif points[-1][1] != v:  # else the curve's last point is the final value
            # at the curve's last step with a later timestamp: the key's latest value
            out.append(Metric(k, float(v), timestamp + 1, int(points[-1][0])))
    return out


def import_record(path: Path, extra_tags: dict[str, str]) -> str | None:
    """Creates one FINISHED run from a run record; returns its id (None when its run is in the store)."""
    import mlflow
    from mlflow.entities import Param
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

    record = read_record(path)
    experiment = record.get("experiment") or record["params"].get("mlflow.experiment") or "sagan-mnist"
    exp_id = tracking.setup(experiment)
    client = mlflow.MlflowClient(tracking.tracking_uri())
    # a record of an imported run stands for the run it was imported from
    original = record["tags"].get("imported.run_id") or record["run_id"]
    if _in_store(client, exp_id, record["run_id"], original):
        log.info("%s: run %s is already in the store", path, record["run_id"])
        return None
    # the parent id of the store it came from means nothing here; the run name is create_run's
    tags = {k: v for k, v in record["tags"].items() if k not in (MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME)}
    tags |= {"grid.name": record["grid"], "grid.cell": record["cell"], "grid.seed": str(record["seed"]),
             "imported.from": str(path), "imported.run_id": original, **extra_tags}
    parent = grid_runs.grid_parent_run(experiment, record["grid"])
    if parent:
        tags[MLFLOW_PARENT_RUN_ID] = parent
    run = client.create_run(exp_id, start_time=record.get("start_ms"), run_name=record.get("run_name"), tags=tags)
    run_id = run.info.run_id
    params = [Param(k, str(v)) for k, v in record["params"].items()]
    metrics = record_metrics(record, record.get("end_ms") or run.info.start_time)
    for i in range(0, len(params), 100):  # MLflow's batch limits: 100 params, 1000 metrics
        client.log_batch(run_id, params=params[i:i + 100], synchronous=True)
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000], synchronous=True)
    if not record["tags"].get("mlflow.note.content"):
        client.set_tag(run_id, "mlflow.note.content", f"imported from the run record {path}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in IMAGES:  # as the sample stage logged them: samples/grid.png, samples/attention.png
            if image_path(path, name).exists():
                shutil.copyfile(image_path(path, name), Path(tmp) / name)
                client.log_artifact(run_id, str(Path(tmp) / name), "samples")
    client.set_terminated(run_id, "FINISHED", end_time=record.get("end_ms"))
    return run_id


def _sources(path: Path) -> list[Path]:
    """The run folders and run records `path` names: itself (a run folder or a record); else what it holds
    (a grid's run folders, or its records), and the records of its subfolders (results/: every grid)."""
    if path.is_file() or (path / "params.yaml").exists():
        return [path]
    if not path.is_dir():
        raise UserError(f"{path} is neither a folder nor a file")
    found = sorted(path.glob("*.json"))
    for sub in sorted(d for d in path.iterdir() if d.is_dir()):
        records = sorted(sub.glob("*.json"))
        found += records if records and not (sub / "params.yaml").exists() else [sub]
    return found


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s run_import: %(message)s", datefmt="%H:%M:%S")
    ap = argparse.ArgumentParser(prog="python -m pipeline.run_import", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path,
                    help="run folders, or folders of run folders (e.g. .grid/default); run records, or folders "
                         "of them (e.g. results/default, or results/ for every grid)")
    ap.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                    help="a tag for every imported run (e.g. machine.gpu=..., version.torch=...)")
    args = ap.parse_args(argv)
    try:
        tags = {}
        for kv in args.tag:
            if "=" not in kv:
                raise UserError(f"--tag {kv!r}: expected KEY=VALUE")
            k, v = kv.split("=", 1)
            tags[k] = v
        sources = [s for f in args.folders for s in _sources(f)]
        done = [r for s in sources
                if (r := (import_record(s, tags) if s.is_file() else import_folder(s.resolve(), tags)))]
        log.info("imported %d of %d run folders and records into %s", len(done), len(sources),
                 tracking.tracking_uri())
    except USER_ERRORS as e:
        print(f"error (run_import): {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
