"""Run records (results/<grid>/*.json): written from a real MLflow store and read back into the same GridRuns,
the same report whether it reads the store or the records, store and records merged one copy per run,
records loaded into another store, a record only for a finished and evaluated run, and the published
grids converted into records that reproduce their reports' numbers and name what they lack."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import mlflow
import pytest
from test_report import _full_runs, _log_runs

from pipeline import tracking
from pipeline.config import Params, with_override
from pipeline.errors import UserError
from pipeline.records import MAX_CURVE_POINTS, read_record, read_records, thin, to_text
from pipeline.records.__main__ import export_grid
from pipeline.records.export import save_run_record
from pipeline.report import analyze, load_runs, summary, write_report
from pipeline.report.runs import GridRun, load_records, merge_runs, run_of_record
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
    0, 1), one with a 120-point gamma curve and one with a long note; their records exported to results/."""
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


def _without_dropped(r: GridRun) -> GridRun:
    return replace(r, tags={k: v for k, v in r.tags.items() if v != LONG_NOTE})


@pytest.mark.slow
def test_a_record_reads_back_as_the_run_the_store_gives_the_report(store):
    root, _, _, paths = store
    assert len(paths) == 8 and all(p.parent == root / "results/default" for p in paths)
    from_store = load_runs(P, "default")
    from_records = load_records("default", root / "results")
    assert sorted(from_records, key=lambda r: (r.cell, r.seed)) == [_without_dropped(r) for r in from_store]
    for path in paths:
        record = read_record(path)
        assert path.read_text() == to_text(record)  # the text is stable: an export again changes nothing
        assert path.stat().st_size < 12_000  # a few KB
        assert record["schema"] == 1 and record["source"] == "mlflow run" and record["grid"] == "default"
        assert record["wall_s"] == (record["end_ms"] - record["start_ms"]) / 1000
        assert record["params"]["train.steps"] == "5000" and record["tags"]["machine.gpu"] == "H100"
        assert "evaluator_b.fid" in record["metrics"] and "evaluator_b.floor.fid" in record["metrics"]
        assert record["tags"]["evaluator_b.sha256"] == "b0b0" * 16
        values = "-".join(kv.split("=")[1] for kv in record["cell"].split(","))
        assert path.name == f"{values}-s{record['seed']}-{record['run_id'][:8]}.json"
    dropped = [read_record(p) for p in paths if "tags.mlflow.note.content" in read_record(p)["missing"]]
    assert len(dropped) == 1 and "mlflow.note.content" not in dropped[0]["tags"]


@pytest.mark.slow
def test_long_curves_are_thinned_alike_in_the_store_and_the_records(store):
    curve = [(s, float(s)) for s in range(1, 121)]
    kept = thin(curve)
    assert len(kept) <= MAX_CURVE_POINTS and kept[-1] == curve[-1] and kept == curve[::-1][::3][::-1]
    assert thin(curve[:MAX_CURVE_POINTS]) == curve[:MAX_CURVE_POINTS]  # the default grid's 50 points stay whole
    root = store[0]
    (long,) = [r for r in load_runs(P, "default") if len(r.gamma_curves.get("gamma.g14", [0] * 50)) != 50]
    assert long.gamma_curves["gamma.g14"] == [(s, s / 1000) for s, _ in kept]
    (record,) = [r for r in load_records("default", root / "results") if r.run_id == long.run_id]
    assert record.gamma_curves == long.gamma_curves


@pytest.mark.slow
def test_the_report_is_the_same_from_the_store_or_from_its_records(store, tmp_path, monkeypatch, caplog):
    root = store[0]
    monkeypatch.setenv("DVC_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    outputs = {}
    for source in ("store", "records", "both"):
        md = write_report(P, out_dir=tmp_path / source, source=source, results=root / "results")
        outputs[source] = (md.read_text(), (md.parent / "ablation.json").read_text(),
                           sorted(p.name for p in (md.parent / "ablation_files").iterdir()))
    assert outputs["records"] == outputs["store"] and outputs["both"] == outputs["store"]
    text, data, files = outputs["store"]
    assert len(json.loads(data)["runs"]) == 8 and any(f.endswith("-grid.png") for f in files)
    assert json.loads(data)["second_evaluator"]["measured"] and "| holds under both |" in text

    # a fresh clone: the committed report (rendered with the store) and results/, no store at all: the
    # report is rewritten unchanged from the records, its images kept; nothing creates a store
    clone = tmp_path / "clone/reports"
    shutil.copytree(tmp_path / "store", clone)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'clone/mlflow.db'}")
    md = write_report(P, out_dir=clone, results=root / "results")
    assert not (tmp_path / "clone/mlflow.db").exists()
    assert (md.read_text(), (md.parent / "ablation.json").read_text(),
            sorted(p.name for p in (md.parent / "ablation_files").iterdir())) == outputs["store"]
    # without an earlier render there are no images to keep; everything else is the same
    bare = write_report(P, out_dir=tmp_path / "bare", results=root / "results")
    samples = "## Samples and attention"
    assert bare.read_text().split(samples)[0] == text.split(samples)[0]
    assert "No images" in bare.read_text().split(samples)[1]
    assert (bare.parent / "ablation.json").read_text() == data


def test_store_and_records_merge_one_copy_per_run():
    full = [r for r in _full_runs() if r.seed == 0][:3]
    a, b, c = full
    b_converted = replace(b, fid_curve=[], gamma_curves={}, start_ms=None, end_ms=None, tags={})
    c_imported = replace(c, run_id="copy-of-c", tags={**c.tags, "imported.run_id": c.run_id})
    older_a = replace(a, run_id="older", start_ms=a.start_ms - 1)
    newer_a = replace(a, run_id="newer", start_ms=a.start_ms + 1, metrics={**a.metrics, "fid": 1.0})
    extra = replace(a, run_id="seed9", seed=9)
    merged = merge_runs([a, b, c_imported], [b_converted, c, older_a, extra])
    assert [r.run_id for r in merged] == [b.run_id, a.run_id, "seed9", "copy-of-c"]
    assert merged[0].fid_curve  # the store's copy, not the converted record's
    # the latest start of a cell x seed wins, wherever it comes from (a record without times is the oldest)
    assert [r.run_id for r in merge_runs([a], [newer_a])] == ["newer"]
    assert [r.run_id for r in merge_runs([b_converted], [replace(b, run_id="timed")])] == ["timed"]


@pytest.mark.slow
def test_records_load_into_another_store(store, tmp_path, monkeypatch):
    root, _, _, paths = store
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert run_import([str(root / "results/default")]) == 0
    imported = load_runs(P, "default")
    records = {r.run_id: r for r in load_records("default", root / "results")}
    assert len(imported) == 8
    for r in imported:
        original = records[r.tags["imported.run_id"]]
        assert (r.cell, r.seed, r.metrics, r.params, r.fid_curve, r.gamma_curves, r.start_ms, r.end_ms) == (
            original.cell, original.seed, original.metrics, original.params, original.fid_curve,
            original.gamma_curves, original.start_ms, original.end_ms)
        assert r.tags["machine.gpu"] == "H100" and r.tags["imported.from"].endswith(".json")
    client = mlflow.MlflowClient(tracking.tracking_uri())
    assert all(client.get_run(r.run_id).info.run_name == read_record(Path(r.tags["imported.from"]))["run_name"]
               for r in imported)
    # again: every run is there already; and records merged with their imported copies count once
    assert run_import([str(root / "results")]) == 0
    assert len(load_runs(P, "default")) == 8
    assert len(merge_runs(imported, list(records.values()))) == 8
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
    assert save_run_record(running) is None and save_run_record(unevaluated) is None
    assert save_run_record("no-such-run") is None  # never raises: the run it follows has finished
    assert not (root / "results/hook").exists()
    client.set_terminated(running, "FINISHED")
    path = save_run_record(running)
    assert path == root / "results/hook" / f"post-hinge-s7-{running[:8]}.json"
    assert read_record(path)["metrics"] == {"fid": 30.0}


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
    data = json.loads(json.dumps(summary(analyze(P, grid, merge_runs([], [run_of_record(r) for _, r in found])))))
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
