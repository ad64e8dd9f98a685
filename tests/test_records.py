"""Run records (results/<grid>/*.json): exported from a real MLflow store as the store holds each run, with
its sample images beside it; the report from the records alone (no store), its images from beside the
median run's record; one run per cell x seed; records loaded into another store; a record only for a
finished and evaluated run; and the published grids converted into records that reproduce their reports'
numbers and name what they lack."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import mlflow
import pytest
from test_report import _full_runs, _log_runs

from pipeline import tracking
from pipeline.config import Params, with_override
from pipeline.errors import UserError
from pipeline import grid_runs
from pipeline.records import MAX_CURVE_POINTS, image_path, read_record, read_records, thin, to_text, write_record
from pipeline.records.__main__ import export_grid
from pipeline.records.export import record_of, save_images, save_journal_record, save_run_record
from pipeline.report import analyze, summary, write_report
from pipeline.report.runs import GridRun, latest_per_cell, load_records, run_of_record
from pipeline.run_import import main as run_import

ROOT = Path(__file__).resolve().parent.parent
# the grid these tests log is `default` with the pilot's seeds, replicated by `default-h200`
P = with_override(Params(), {"ablation.name": "default", "ablation.seeds": [0, 1, 2], "ablation.steps": 5000,
                             "ablation.replicate_with": ["default-h200"]})
LONG_NOTE = "n" * 2000  # over the records' tag limit: left out, and named in `missing`
# the 3-seed pilot (published in reports/ until the grid grew to 10 seeds) and its H200 replication
PUBLISHED = {"default": "docs/results/2026-11-26-cpu/ablation.json",
             "default-h200": "docs/results/2026-11-26-h200/ablation.json"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real MLflow store with 8 finished runs of grid `default` (position none/post x hinge/bce x seeds
    0, 1), one with a 120-point gamma curve and one with a long note, each with samples/grid.png; their
    records exported to results/, each run's grid.png beside its record."""
    root = tmp_path_factory.mktemp("records")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DVC_ROOT", str(root))  # the lock file, the artifacts and results/ live in root
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        exp_id = tracking.setup(P.mlflow.experiment)
        client = mlflow.MlflowClient(tracking.tracking_uri())
        (root / "grid.png").write_bytes(b"\x89PNG not really")
        # evaluator B's figures too: the evaluate stage logs them, so a record carries them
        runs = [r for r in _full_runs(with_b=True) if r.params["attention.position"] in ("none", "post") and r.seed < 2]
        long = next(r for r in runs if r.gamma_curves)
        long.gamma_curves["gamma.g14"] = [(s, s / 1000) for s in range(1, 121)]
        runs[0].tags["mlflow.note.content"] = LONG_NOTE
        _log_runs(client, exp_id, "default", runs, root)
        paths = export_grid(P.mlflow.experiment, "default", root / "results", P.ablation.axes)
        yield root, client, exp_id, paths


@pytest.mark.slow
def test_an_exported_record_is_the_run_as_the_store_holds_it(store):
    root, client, _, paths = store
    assert len(paths) == 8 and all(p.parent == root / "results/default" for p in paths)
    for path in paths:
        record = read_record(path)
        assert record == record_of(client.get_run(record["run_id"]), client)
        assert path.read_text() == to_text(record)  # the text is stable: an export again changes nothing
        assert path.stat().st_size < 12_000  # a few KB
        assert record["schema"] == 1 and record["source"] == "mlflow run" and record["grid"] == "default"
        assert record["wall_s"] == (record["end_ms"] - record["start_ms"]) / 1000
        assert record["params"]["train.steps"] == "5000" and record["tags"]["machine.gpu"] == "H100"
        assert "evaluator_b.fid" in record["metrics"] and "evaluator_b.floor.fid" in record["metrics"]
        assert record["tags"]["evaluator_b.sha256"] == "b0b0" * 16
        values = "-".join(kv.split("=")[1] for kv in record["cell"].split(","))
        assert path.name == f"{values}-s{record['seed']}-{record['run_id'][:8]}.json"
        # its images: the store's samples/grid.png; no attention.png was logged, so none (and no error)
        assert image_path(path, "grid.png").read_bytes() == b"\x89PNG not really"
        assert not image_path(path, "attention.png").exists()
    dropped = [read_record(p) for p in paths if "tags.mlflow.note.content" in read_record(p)["missing"]]
    assert len(dropped) == 1 and "mlflow.note.content" not in dropped[0]["tags"]
    # read back as the report sees them: one run per record, knowing its file
    runs = load_records("default", root / "results", P.ablation.axes)
    assert {r.record for r in runs} == set(paths)
    assert all(r == run_of_record(read_record(r.record), P.ablation.axes) for r in runs)


@pytest.mark.slow
def test_long_curves_are_thinned_in_the_records(store):
    curve = [(s, float(s)) for s in range(1, 121)]
    kept = thin(curve)
    assert len(kept) <= MAX_CURVE_POINTS and kept[-1] == curve[-1] and kept == curve[::-1][::3][::-1]
    assert thin(curve[:MAX_CURVE_POINTS]) == curve[:MAX_CURVE_POINTS]  # the default grid's 50 points stay whole
    root = store[0]
    (long,) = [r for r in load_records("default", root / "results")
               if len(r.gamma_curves.get("gamma.g14", [0] * 50)) != 50]
    assert long.gamma_curves["gamma.g14"] == [(s, s / 1000) for s, _ in kept]


@pytest.mark.slow
def test_the_report_reads_the_records_alone(store, tmp_path, monkeypatch):
    """No store: the numbers from the records, the images from beside them; records without images (written
    before runs kept them) keep an earlier render's; with neither, the report says so and nothing else moves."""
    root = store[0]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none/mlflow.db'}")
    md = write_report(P, out_dir=tmp_path / "first", results=root / "results")
    text, data = md.read_text(), (md.parent / "ablation.json").read_text()
    files = sorted(p.name for p in (md.parent / "ablation_files").iterdir())
    assert len(json.loads(data)["runs"]) == 8 and any(f.endswith("-grid.png") for f in files)
    assert json.loads(data)["second_evaluator"]["measured"] and "| holds under both |" in text
    assert not (tmp_path / "none").exists()

    # the records without their images, the committed report beside them: rewritten unchanged
    bare_results = tmp_path / "bare-results/default"
    bare_results.mkdir(parents=True)
    for path in (root / "results/default").glob("*.json"):
        shutil.copy2(path, bare_results / path.name)
    clone = tmp_path / "clone/reports"
    shutil.copytree(tmp_path / "first", clone)
    md = write_report(P, out_dir=clone, results=bare_results.parent)
    assert (md.read_text(), (md.parent / "ablation.json").read_text(),
            sorted(p.name for p in (md.parent / "ablation_files").iterdir())) == (text, data, files)
    # without an earlier render there are no images to keep; everything else is the same
    bare = write_report(P, out_dir=tmp_path / "bare", results=bare_results.parent)
    samples = "## Samples and attention"
    assert bare.read_text().split(samples)[0] == text.split(samples)[0]
    assert "No images" in bare.read_text().split(samples)[1]
    assert (bare.parent / "ablation.json").read_text() == data


def _grid_records(results: Path, grid: str = "default") -> list[GridRun]:
    """The runs of _full_runs as records of `grid` in results/<grid>/, each with a grid.png of its own bytes
    (and an attention.png where it has attention) beside it, as the evaluate stage leaves them."""
    runs = _full_runs()
    for r in runs:
        samples = results.parent / "samples" / grid / r.run_id
        samples.mkdir(parents=True)
        (samples / "grid.png").write_bytes(f"grid of {r.run_id}".encode())
        if r.params["attention.position"] != "none":
            (samples / "attention.png").write_bytes(f"attention of {r.run_id}".encode())
        curves = {"fid_quick": r.fid_curve, **r.gamma_curves}
        path = write_record({"schema": 1, "grid": grid, "cell": r.cell, "seed": r.seed, "run_id": r.run_id,
                             "params": r.params, "metrics": r.metrics, "tags": r.tags, "curves": curves,
                             "start_ms": r.start_ms, "end_ms": r.end_ms}, results / grid)
        save_images(path, samples)
    return runs


def test_the_report_shows_each_cells_median_run_images_from_beside_its_record(tmp_path):
    """No store, and the report's process never imports mlflow."""
    results = tmp_path / "results"
    runs = _grid_records(results, "g")
    argv = ["--grid", "g", "--results", str(results), "--out", str(tmp_path / "reports")]
    code = (f"import sys; from pipeline.report import main; assert main({argv!r}) == 0; "
            f"assert 'mlflow' not in sys.modules, 'the report imported mlflow'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={**os.environ,
                   "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'none/mlflow.db'}"})
    assert not (tmp_path / "none").exists()
    md = tmp_path / "reports/g/ablation.md"
    files, text = md.parent / "ablation_files", md.read_text()
    shown = json.loads((files / "samples.json").read_text())
    for cell in {r.cell for r in runs}:
        in_cell = sorted((r for r in runs if r.cell == cell), key=lambda r: r.metrics["fid"])
        median = in_cell[(len(in_cell) - 1) // 2]
        slug = re.sub(r"[^A-Za-z0-9_-]+", "_", cell)
        assert (files / f"{slug}-grid.png").read_bytes() == f"grid of {median.run_id}".encode()
        assert shown[f"{slug}-grid.png"] == median.run_id
        assert f"run `{median.run_id}`: the median run" in text and f"(ablation_files/{slug}-grid.png)" in text
        has_attention = median.params["attention.position"] != "none"
        assert (files / f"{slug}-attention.png").exists() == has_attention
        if has_attention:
            assert (files / f"{slug}-attention.png").read_bytes() == f"attention of {median.run_id}".encode()


def test_a_grid_runs_record_and_its_images_from_its_journal(tmp_path):
    """What the evaluate stage leaves at a grid run's end: its record, and samples/grid.png and
    attention.png beside it (a run without attention: no attention image)."""
    p = with_override(Params(), {"mlflow.grid": "g", "seed": 3})
    samples = tmp_path / "run/samples"
    samples.mkdir(parents=True)
    (samples / "grid.png").write_bytes(b"grid")
    journal = {"tags": {"grid.name": "g", "grid.cell": "attention.position=post,loss.type=hinge",
                        "grid.seed": "3"}, "curves": {"fid_quick": [[10, 50.0]]}, "metrics": {"fid": [10, 9.5]},
               "start_ms": 1000, "end_ms": 2000, "run_name": "r"}
    path = save_journal_record(p, "abcdef0123", journal, root=tmp_path, samples=samples)
    assert path == tmp_path / "results/g/post-hinge-s3-abcdef01.json" and read_record(path)["metrics"] == {"fid": 9.5}
    assert image_path(path, "grid.png") == tmp_path / "results/g/post-hinge-s3-abcdef01-grid.png"
    assert image_path(path, "grid.png").read_bytes() == b"grid" and not image_path(path, "attention.png").exists()
    (samples / "attention.png").write_bytes(b"maps")
    save_journal_record(p, "abcdef0123", journal, root=tmp_path, samples=samples)
    assert image_path(path, "attention.png").read_bytes() == b"maps"
    assert sorted(f.name for f in path.parent.iterdir()) == [  # nothing half-written left behind
        "post-hinge-s3-abcdef01-attention.png", "post-hinge-s3-abcdef01-grid.png", path.name]
    assert [r.run_id for r in load_records("g", tmp_path / "results")] == ["abcdef0123"]  # images are no records


def test_one_run_per_cell_and_seed():
    a, b, c = [r for r in _full_runs() if r.seed == 0][:3]
    c_imported = replace(c, run_id="copy-of-c", tags={**c.tags, "imported.run_id": c.run_id})
    older_a = replace(a, run_id="older", start_ms=a.start_ms - 1)
    b_untimed = replace(b, run_id="untimed", start_ms=None)
    extra = replace(a, run_id="seed9", seed=9)
    picked = latest_per_cell([older_a, a, b_untimed, b, c_imported, c, extra])
    # the latest start of a cell x seed (a record without one is the oldest); a run and its imported copy once
    assert [r.run_id for r in picked] == [b.run_id, a.run_id, "seed9", "copy-of-c"]


@pytest.mark.slow
def test_records_load_into_another_store(store, tmp_path, monkeypatch):
    root, _, _, paths = store
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert run_import([str(root / "results/default")]) == 0
    found = grid_runs.finished_grid_runs(P.mlflow.experiment, "default", P.ablation.axes)
    assert len(found) == 8
    client = mlflow.MlflowClient(tracking.tracking_uri())
    for run in found.values():
        mine, original = record_of(run, client), read_record(Path(run.data.tags["imported.from"]))
        assert original["run_id"] == run.data.tags["imported.run_id"]
        for field in ("grid", "cell", "seed", "run_name", "experiment", "start_ms", "end_ms", "params", "metrics",
                      "curves"):
            assert mine[field] == original[field], field
        assert mine["tags"]["machine.gpu"] == "H100" and mine["tags"]["imported.from"].endswith(".json")
        # its image, beside the record, is the imported run's artifact again
        assert [a.path for a in client.list_artifacts(run.info.run_id, "samples")] == ["samples/grid.png"]
    # again: every run is there already
    assert run_import([str(root / "results")]) == 0
    assert len(grid_runs.finished_grid_runs(P.mlflow.experiment, "default", P.ablation.axes)) == 8
    # the imported runs' records beside their originals' count once, with the images exported again
    copies = export_grid(P.mlflow.experiment, "default", tmp_path / "results", P.ablation.axes)
    assert all(image_path(p, "grid.png").read_bytes() == b"\x89PNG not really" for p in copies)
    for path in paths:
        shutil.copy2(path, tmp_path / "results/default" / path.name)
    assert len(load_records("default", tmp_path / "results")) == 8
    # a record of a run the store itself holds is not imported into it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.setenv("DVC_ROOT", str(root))
    before = len(store[1].search_runs([store[2]]))
    assert run_import([str(paths[0])]) == 0
    assert len(store[1].search_runs([store[2]])) == before


@pytest.mark.slow
def test_a_record_only_for_a_finished_evaluated_grid_run(store, tmp_path, monkeypatch):
    root, client, exp_id, _ = store
    monkeypatch.setenv("DVC_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    tags = {"grid.name": "hook", "grid.cell": "attention.position=post,loss.type=hinge", "grid.seed": "7"}
    running = client.create_run(exp_id, tags=tags).info.run_id
    client.log_metric(running, "fid", 30.0)
    unevaluated = client.create_run(exp_id, tags=tags).info.run_id
    client.set_terminated(unevaluated, "FINISHED")
    samples = tmp_path / "samples"  # the run's own samples/: its images go beside its record
    samples.mkdir()
    (samples / "grid.png").write_bytes(b"hook grid")
    assert save_run_record(running, None, samples) is None and save_run_record(unevaluated, None, samples) is None
    assert save_run_record("no-such-run", None, samples) is None  # never raises: the run it follows has finished
    assert not (root / "results/hook").exists()
    client.set_terminated(running, "FINISHED")
    path = save_run_record(running, None, samples)
    assert path == root / "results/hook" / f"post-hinge-s7-{running[:8]}.json"
    assert read_record(path)["metrics"] == {"fid": 30.0}
    assert image_path(path, "grid.png").read_bytes() == b"hook grid" and not image_path(path, "attention.png").exists()


def test_bad_records_say_what_to_do(tmp_path):
    folder = tmp_path / "default"
    folder.mkdir()
    (folder / "x.json").write_text(json.dumps({"schema": 99}))
    with pytest.raises(UserError, match="update the project"):
        read_records(folder)
    (folder / "x.json").write_text("{not json")
    with pytest.raises(UserError, match="not a run record"):
        read_records(folder)
    record = {"schema": 1, "grid": "other", "cell": "a=b", "seed": 0, "run_id": "r", "params": {}, "metrics": {},
              "tags": {}, "curves": {}}
    (folder / "x.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="move it to"):
        load_records("default", tmp_path)


@pytest.mark.parametrize("grid", sorted(PUBLISHED))
def test_the_published_grids_as_records(grid):
    """The 18 CPU runs of the 3-seed pilot (docs/results/2026-11-26-cpu/) and the 18 H200 runs (docs/results/...) as records: they
    give the published contrasts and cells exactly, and name what the reports did not keep."""
    source = PUBLISHED[grid]
    # the grid grows: new runs (their own records) sit beside the converted ones
    found = [(p, r) for p, r in read_records(ROOT / "results" / grid) if r["source"] == f"converted from {source}"]
    assert len(found) == 18
    for _, record in found:
        assert record["source"] == f"converted from {source}" and record["grid"] == grid
        assert {"curves.fid_quick", "curves.gamma.*", "start_ms", "end_ms"} <= set(record["missing"])
        assert any(m.startswith("params (all but") for m in record["missing"])
        assert record["tags"]["evaluator.sha256"].startswith("93d9292a6588")
        assert record["tags"]["runtime.precision"] == "bf16" and "fid" in record["metrics"]
    published = json.loads((ROOT / source).read_text())
    data = json.loads(json.dumps(summary(analyze(P, grid, latest_per_cell(run_of_record(r) for _, r in found)))))
    for key in ("runs", "cells", "floor", "budget", "missing"):
        assert data[key] == published[key], key
    # the report has grown fields since, and its contrasts now take the seed as the unit (issue 29): the
    # published pair-level contrasts keep their differences; the interactions (per seed then too) match
    for row, old in zip(data["contrasts"], published["contrasts"]):
        assert (row["metric"], row["axis"], row["a"], row["b"]) == (old["metric"], old["axis"], old["a"], old["b"])
        assert row["mean_diff"] == pytest.approx(old["mean_diff"], rel=1e-12, abs=1e-12)
    assert [{k: row[k] for k in old} for row, old in zip(data["interactions"], published["interactions"])] == \
        published["interactions"]


def test_cpu_records_name_the_commits_they_cannot_tell_apart():
    (_, record), *_ = [(p, r) for p, r in read_records(ROOT / "results/default") if r["source"] != "mlflow run"]
    assert "tags.git.commit" in record["missing"] and "b7ca04aae567" in record["note"]
    assert record["tags"]["machine.cpu"] == "AMD EPYC" and record["tags"]["metrics.version"] == "1"
    (_, h200), *_ = read_records(ROOT / "results/default-h200")
    assert h200["tags"]["machine.gpu"] == "NVIDIA H200" and "tags.machine.cpu" in h200["missing"]
    assert "renamed `default-h200`" in h200["note"]
    assert isinstance(run_of_record(h200), GridRun)


@pytest.mark.slow  # CPU-heavy (over 9 s of CPU on a Zen 3 core): `make test` runs it
def test_the_published_report_is_what_its_records_give(tmp_path, monkeypatch):
    """reports/ablation.md and .json, rebuilt with no MLflow store from the records of the runs they list
    (and of the replication grids), are the committed files. Records of runs the report does not list
    yet (a grid still growing) are left out: the report is regenerated when they are published."""
    from pipeline.config import load_params
    from pipeline.report import write_report

    p = load_params(ROOT / "params.yaml")
    published = json.loads((ROOT / "reports/ablation.json").read_text())
    listed = {run["run_id"] for run in published["runs"]}
    results = tmp_path / "results"
    for grid in [p.ablation.name, *p.ablation.replicate_with]:
        (results / grid).mkdir(parents=True)
        for path, record in read_records(ROOT / "results" / grid):
            if grid != p.ablation.name or record["run_id"] in listed:
                shutil.copy2(path, results / grid / path.name)
    assert len(list((results / p.ablation.name).iterdir())) == len(listed)
    out = tmp_path / "reports"
    shutil.copytree(ROOT / "reports", out, ignore=shutil.ignore_patterns("smoke", "t", "loc"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'no-store' / 'mlflow.db'}")
    md = write_report(p, out_dir=out, results=results)
    assert not (tmp_path / "no-store").exists()
    assert md.read_text() == (ROOT / "reports/ablation.md").read_text()
    assert json.loads((out / "ablation.json").read_text()) == published
