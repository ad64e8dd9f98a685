"""Rebuilding MLflow runs from the local runner's run folders: the finished grid runs come back, with what a
record exported from them holds."""
from __future__ import annotations

import json

import mlflow
import numpy as np
import yaml

from pipeline.config import Params, with_override
from pipeline.run_import import main as run_import
from pipeline.visualize import save_png

# no server, DVC or subprocess: an MLflow sqlite store in the test's folder (as tests/test_report.py's), so
# `make test-fast` runs it


def _run_folder(path, seed: int, fid: float):
    p = with_override(Params(), {"seed": seed, "train.steps": 40, "train.ema_start": 20, "mlflow.grid": "g",
                                 "attention.position": "pre", "loss.type": "bce"})
    for sub in ("metrics", "plots", "samples", "models", "data/prepared"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    (path / "params.yaml").write_text(yaml.safe_dump(p.to_dict()))
    (path / "metrics/train.json").write_text(json.dumps(
        {"steps": 40, "images_per_s": 500.0, "wall_s": 3.5, "gamma.g14": 0.12,
         "runtime": {"device": "cuda:0", "precision": "bf16"}}))
    (path / "metrics/evaluate.json").write_text(json.dumps(
        {"fid": fid, "classifier_score": 7.5, "precision": 0.6, "recall": 0.9, "n_samples": 100,
         "floor": {"fid": 4.4, "classifier_score": 9.2}}))
    (path / "plots/train_losses.csv").write_text(
        "step,d_loss,g_loss,d_real,d_fake\n" + "".join(f"{s},1.0,0.5,0.1,-0.1\n" for s in range(1, 41)))
    (path / "plots/train_fid.csv").write_text("step,fid_quick\n20,90.0\n40,60.0\n")
    (path / "models/run.json").write_text(json.dumps({"run_id": f"original{seed}"}))
    (path / "data/prepared/meta.json").write_text(json.dumps({"source": "embedded", "sha256": {"x_train": "ab"}}))
    save_png(np.zeros((28, 28), np.uint8), path / "samples/grid.png")


def test_run_folders_become_finished_grid_runs(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'store/mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    grid = tmp_path / "grid"
    _run_folder(grid / "pre-bce-s0", 0, 30.0)
    _run_folder(grid / "pre-bce-s1", 1, 34.0)
    assert run_import([str(grid), "--tag", "machine.gpu=NVIDIA H200"]) == 0

    from pipeline.grid_runs import finished_grid_runs
    from pipeline.records.export import record_of

    p = with_override(Params(), {"mlflow.grid": "g"})
    client = mlflow.MlflowClient(uri)
    found = finished_grid_runs(p.mlflow.experiment, "g", p.ablation.axes)
    assert [(cell, seed, r.data.metrics["fid"]) for (cell, seed), r in sorted(found.items())] == [
        ("attention.position=pre,loss.type=bce", 0, 30.0), ("attention.position=pre,loss.type=bce", 1, 34.0)]
    r = found["attention.position=pre,loss.type=bce", 0]
    # what a record exported from this store holds (python -m pipeline.records export), as the report reads it
    record = record_of(r, client)
    assert record["curves"]["fid_quick"] == [[20, 90.0], [40, 60.0]]
    metrics, tags = record["metrics"], record["tags"]
    assert metrics["floor.fid"] == 4.4 and metrics["final.wall_s"] == 3.5 and metrics["gamma.g14"] == 0.12
    assert tags["machine.gpu"] == "NVIDIA H200" and tags["runtime.device"] == "cuda:0"
    assert tags["imported.run_id"] == "original0" and record["params"]["train.steps"] == "40"
    assert len(client.get_metric_history(r.info.run_id, "d_loss")) == 40
    assert [a.path for a in client.list_artifacts(r.info.run_id, "samples")] == ["samples/grid.png"]
    # importing again adds nothing
    assert run_import([str(grid)]) == 0
    assert len(finished_grid_runs(p.mlflow.experiment, "g", p.ablation.axes)) == 2
