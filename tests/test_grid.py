"""The ablation grid end to end: one command, parallel queued experiments, MLflow runs per cell x
seed, each with its run record and images, a report regenerated from the records alone, and the runs
compared in the MLflow UI in Chromium."""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import mlflow
import pytest

from e2e import BROWSER_ARGS, CHROMIUM, env, make_repo, mlflow_server, run

# the tests that run a grid, DVC, a server or processes are `slow` (each marked); the pure ones run in
# `make test-fast`
ROOT_DIR = Path(__file__).resolve().parent
ROOT = ROOT_DIR.parent

AXES = {"attention.position": ["post"], "loss.type": ["hinge", "bce"]}
# one seed: two queued experiments, run at once (the report's intervals and tests over seeds are checked
# on the Ray runner's grid, tests/test_grid_ray.py, which costs a fraction of DVC's queue)
GRID = [sys.executable, "-m", "pipeline.grid", "run", "--name", "t", "--steps", "4", "--n-samples", "100",
        "--seeds", "0", "--jobs", "2"]


@pytest.fixture(scope="module")
def grid_repo(tmp_path_factory, prepared):
    repo = make_repo(tmp_path_factory.mktemp("grid") / "repo", {"ablation": {"axes": AXES}}, template=prepared)
    t0 = time.time()
    res = run(GRID, repo, timeout=1500)
    return repo, res, time.time() - t0


def _grid_runs(repo, parent: bool = False):
    """The grid's runs (or, with parent=True, the run they nest under)."""
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sagan-mnist")
    runs = client.search_runs([exp.experiment_id], "tags.`grid.name` = 't'")
    return client, exp, [r for r in runs if (r.data.tags.get("grid.parent") == "true") == parent]


@pytest.mark.slow
def test_the_grids_runs_nest_under_one_parent_run(grid_repo):
    repo, _, _ = grid_repo
    _, _, (parent,) = _grid_runs(repo, parent=True)
    _, _, runs = _grid_runs(repo)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "grid t"
    assert parent.data.tags["grid.failed_runs"] == "0"
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}


@pytest.mark.slow
def test_one_finished_run_per_cell_and_seed(grid_repo):
    repo, _, _ = grid_repo
    client, exp, runs = _grid_runs(repo)
    cells = {(r.data.tags["grid.cell"], r.data.tags["grid.seed"]) for r in runs}
    assert len(runs) == 2 and len(cells) == 2, [(r.data.tags, r.info.status) for r in runs]
    for r in runs:
        assert r.info.status == "FINISHED"
        assert "fid" in r.data.metrics and "classifier_score" in r.data.metrics
        assert r.data.params["train.steps"] == "4"
        cell = dict(kv.split("=") for kv in r.data.tags["grid.cell"].split(","))
        assert r.data.params["attention.position"] == cell["attention.position"]
        assert r.data.params["loss.type"] == cell["loss.type"]
        assert r.data.params["seed"] == r.data.tags["grid.seed"]
        # a queued DVC experiment's run carries its experiment's name and the commit it started from
        assert r.data.tags["dvc.exp_name"] == f"t-{cell['attention.position']}-{cell['loss.type']}-s{r.data.tags['grid.seed']}"
        assert r.data.tags["dvc.baseline_rev"]
        # two workers share the cores instead of each spinning a pool over all of them
        assert r.data.params["train.threads"] == str(max(1, (os.cpu_count() or 1) // 2))
    # every seed trains on the same split and is judged by the same evaluator (FID compares only so)
    assert len({r.data.tags["data.sha256"] for r in runs}) == 1
    assert len({r.data.tags["evaluator.sha256"] for r in runs}) == 1
    default = client.get_experiment_by_name("Default")
    assert default is None or not client.search_runs([default.experiment_id])


@pytest.mark.slow
def test_report_has_every_cell_and_images(grid_repo):
    repo, _, _ = grid_repo
    text = (repo / "reports/t/ablation.md").read_text()
    for pos in AXES["attention.position"]:
        for loss in AXES["loss.type"]:
            assert f"attention.position={pos},loss.type={loss}" in text
    assert "real data (floor" in text
    images = [line.split("(")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert any("grid.png" in i for i in images) and any("attention.png" in i for i in images)
    for i in images:
        assert (repo / "reports/t" / i).exists(), i


@pytest.mark.slow
def test_every_finished_run_leaves_its_record_in_the_project(grid_repo, tmp_path):
    """Queued experiments run in a temporary copy: their records, and their images, land in the real
    project's results/."""
    from pipeline.records import image_path, read_records
    from pipeline.records.export import record_of

    repo, _, _ = grid_repo
    _, _, runs = _grid_runs(repo)
    found = read_records(repo / "results/t")
    records, paths = {rec["run_id"]: rec for _, rec in found}, {rec["run_id"]: path for path, rec in found}
    assert set(records) == {r.info.run_id for r in runs}
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    for r in runs:
        mine = records[r.info.run_id]
        assert mine["metrics"] == r.data.metrics
        assert mine["cell"] == r.data.tags["grid.cell"]
        # written by the run from its journal, not read back: yet what the store holds, field by field
        stored = record_of(client.get_run(r.info.run_id), client)
        assert mine["source"] == "run" and stored["source"] == "mlflow run"
        for field in ("grid", "cell", "seed", "run_id", "run_name", "experiment", "params", "metrics", "curves",
                      "tags", "missing"):
            assert mine[field] == stored[field], field
        assert mine["curves"]["fid_quick"] and any(k.startswith("gamma.") for k in mine["curves"])
        assert (mine["start_ms"], mine["end_ms"], mine["wall_s"]) == (stored["start_ms"], stored["end_ms"], stored["wall_s"])
        # and the run's images beside its record: what it logged as samples/grid.png and samples/attention.png
        for name in ("grid.png", "attention.png"):
            logged = Path(client.download_artifacts(r.info.run_id, f"samples/{name}", str(tmp_path)))
            assert image_path(paths[r.info.run_id], name).read_bytes() == logged.read_bytes(), name


@pytest.mark.slow
def test_report_regenerates_from_the_records_alone(grid_repo, tmp_path):
    """A fresh clone has no MLflow store and no DVC outputs: results/ (the records, each run's images beside
    its record) and params.yaml give the same report, images included."""
    repo, _, _ = grid_repo
    alone = tmp_path / "alone"
    shutil.copytree(repo / "results", alone / "results")
    shutil.copy2(repo / "params.yaml", alone / "params.yaml")
    e = env()
    e["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'none/mlflow.db'}"
    e["PYTHONPATH"] = str(repo)
    run([sys.executable, "-m", "pipeline.report", "--grid", "t"], alone, env=e)
    again, before = alone / "reports/t", repo / "reports/t"
    assert (again / "ablation.md").read_text() == (before / "ablation.md").read_text()
    assert json.loads((again / "ablation.json").read_text()) == json.loads((before / "ablation.json").read_text())
    images = sorted(p.name for p in (before / "ablation_files").glob("*.png") if p.name.endswith(("-grid.png",
                                                                                                  "-attention.png")))
    assert len(images) == 4  # two cells, each with its samples and attention maps
    assert all((again / "ablation_files" / i).read_bytes() == (before / "ablation_files" / i).read_bytes()
               for i in images)
    assert not (tmp_path / "none").exists()


@pytest.mark.slow
def test_second_invocation_skips_finished_cells(grid_repo):
    repo, first, _ = grid_repo
    t0 = time.time()
    res = run(GRID + ["--no-report"], repo, timeout=300)
    assert "2 finished, 0 to run" in res.stderr
    assert time.time() - t0 < 60
    _, _, runs = _grid_runs(repo)
    assert len(runs) == 2


@pytest.mark.slow
def test_a_resume_as_another_batch_is_refused_and_one_as_the_same_runs(grid_repo):
    """The finished runs' own tags and those a run here would log are one batch (so resuming here runs the
    rest); held to another CPU class (ATEN_CPU_CAPABILITY=default: baseline), `grid run` refuses to add seed
    1, naming the machines and the way out, and starts nothing."""
    repo, _, _ = grid_repo
    same = ("import mlflow; from pipeline.config import load_params; from pipeline.grid.spec import GridSpec;"
            "from pipeline.grid.batch import check_one_batch, tags_here; from pipeline import grid_runs;"
            "p = load_params(); spec = GridSpec.from_params(p, name='t', steps=4, n_samples=100, seeds=[0, 1]);"
            "done = grid_runs.finished_grid_runs(p.mlflow.experiment, 't', p.ablation.axes);"
            "assert len(done) == 2; check_one_batch('t', [r.data.tags for r in done.values()], tags_here(p, spec));"
            "print('one batch')")
    e = env()
    e["MLFLOW_TRACKING_URI"] = f"sqlite:///{repo / 'mlflow.db'}"
    assert "one batch" in run([sys.executable, "-c", same], repo, env=e).stdout
    e = env()
    e["ATEN_CPU_CAPABILITY"] = "default"
    res = run(GRID[:-4] + ["--seeds", "0", "1", "--jobs", "1", "--no-report"], repo, check=False, env=e, timeout=300)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "error (grid): grid 't'" in res.stderr and "machine:" in res.stderr and "--allow-new-batch" in res.stderr
    _, _, runs = _grid_runs(repo)
    assert len(runs) == 2 and {r.data.tags["grid.seed"] for r in runs} == {"0"}


@pytest.mark.slow
def test_dvc_exp_show_lists_the_grid(grid_repo):
    repo, _, _ = grid_repo
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    names = {e.get("name") for rev in shown for e in (rev.get("experiments") or []) for e in e.get("revs", [])}
    assert {"t-post-hinge-s0", "t-post-bce-s0"} <= names


@pytest.fixture
def mlflow_ui(grid_repo):
    repo, _, _ = grid_repo
    with mlflow_server(f"sqlite:///{repo / 'mlflow.db'}", repo) as url:
        yield url, repo


@pytest.mark.slow
def test_mlflow_ui_compares_the_grid_runs_in_a_browser(mlflow_ui, tmp_path):
    """As the README says: its link opens the experiment's runs (best FID first, each by its name), tick
    the runs, Compare: their fid and classifier score side by side."""
    from playwright.sync_api import sync_playwright

    from e2e import ROOT

    assert Path(CHROMIUM).exists(), "Debian's chromium is needed: apt-get install chromium"
    url, repo = mlflow_ui
    client, exp, runs = _grid_runs(repo)
    link = re.search(r"<(http://127\.0\.0\.1:5000/#/experiments/1/runs\?[^>]+)>", (ROOT / "README.md").read_text())
    assert link, "the README's link to the runs"
    start = link.group(1).replace("http://127.0.0.1:5000", url).replace("/experiments/1/",
                                                                         f"/experiments/{exp.experiment_id}/")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        try:
            # wide enough that the compare table renders every run's column
            page = browser.new_page(viewport={"width": 4000, "height": 1400})
            page.goto(start)
            for r in runs:
                page.get_by_text(r.info.run_name, exact=False).first.wait_for(timeout=60_000)
            runs_page = page.inner_text("body")
            page.screenshot(path=str(tmp_path / "runs.png"), full_page=True)
            boxes = page.get_by_role("checkbox")  # the first selects all rows; then one per run, best FID first
            for i in range(1, len(runs) + 1):
                boxes.nth(i).click()
            page.get_by_role("button", name="Compare", exact=True).click()
            page.get_by_text(f"Comparing {len(runs)} Runs").first.wait_for(timeout=60_000)
            # the metrics table renders only the rows in view (with evaluator B's figures, `fid` is below
            # them): scroll through it as a user would, reading what each view shows
            metrics_table = page.get_by_text("classifier_score", exact=True).first
            metrics_table.wait_for(timeout=60_000)
            page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
            body = page.inner_text("body")
            metrics_table.hover()
            for _ in range(40):
                if all(_shown(r.data.metrics["fid"], body) for r in runs):
                    break
                page.mouse.wheel(0, 200)
                page.wait_for_timeout(250)
                body += page.inner_text("body")
        finally:
            browser.close()
    assert "mnist-embedded" in runs_page and "stages.train" in runs_page  # Dataset (log_input), Source
    # best FID first
    order = sorted(runs, key=lambda r: r.data.metrics["fid"])
    positions = [runs_page.find(r.info.run_name) for r in order]
    assert positions == sorted(positions), [(r.info.run_name, r.data.metrics["fid"]) for r in order]
    assert f"Comparing {len(runs)} Runs" in body and "classifier_score" in body
    for r in runs:
        assert r.info.run_name in body
    # the UI shows metrics rounded to a few significant digits
    missing = [(r.info.run_name, r.data.metrics["fid"]) for r in runs if not _shown(r.data.metrics["fid"], body)]
    assert not missing, (missing, body[body.find("fid"):][:2000])


def _shown(value: float, text: str) -> bool:
    """The UI shows metrics rounded to a few significant digits."""
    return any(f"{value:.{d}g}" in text for d in (4, 5, 6))


def test_cells_come_seed_by_seed():
    """A grid stopped half-way leaves whole seeds: every cell of a seed before the next seed's."""
    from pipeline.config import Params
    from pipeline.grid import GridSpec

    cells = GridSpec.from_params(Params(), seeds=[3, 4]).cells()
    assert [c.seed for c in cells] == [3] * 6 + [4] * 6
    assert len({c.label for c in cells[:6]}) == 6


def test_workers_share_the_cores():
    from pipeline.config import Params, with_override
    from pipeline.grid import threads_per_worker

    cores = os.cpu_count() or 1
    assert threads_per_worker(Params(), 1) == cores
    assert threads_per_worker(Params(), 2) == max(1, cores // 2)
    assert threads_per_worker(Params(), 4 * cores) == 1
    assert threads_per_worker(with_override(Params(), {"train.threads": 3}), 2) == 3   # as the user set it


@pytest.mark.slow
def test_a_hung_queue_worker_is_killed(tmp_path):
    """A worker that never exits (as celery's sometimes does after its last task) is killed after the
    grace period; processes elsewhere or of other commands are left alone."""
    import subprocess

    from pipeline.grid import kill_lingering_workers, queue_processes

    sleep = ["-c", "import time; time.sleep(600)"]
    hung = subprocess.Popen(["dvc", *sleep, "queue-worker", "dvc-exp-x-1@localhost"], executable=sys.executable,
                            cwd=tmp_path)
    elsewhere = subprocess.Popen(["dvc", *sleep, "queue-worker", "y"], executable=sys.executable, cwd=ROOT_DIR)
    other = subprocess.Popen(["dvc", *sleep, "exp", "show"], executable=sys.executable, cwd=tmp_path)
    try:
        assert [p.pid for p in queue_processes(tmp_path.resolve())] == [hung.pid]
        assert kill_lingering_workers(tmp_path.resolve(), grace_s=1) == 1
        assert hung.wait(timeout=10) != 0
        assert elsewhere.poll() is None and other.poll() is None
    finally:
        for p in (hung, elsewhere, other):
            p.kill()
            p.wait()


def test_the_device_travels_to_every_run_and_gpu_memory_bounds_the_workers():
    from pipeline.config import Params
    from pipeline.grid import GridSpec, gpu_room

    spec = GridSpec.from_params(Params(), device="cuda", jobs=9)
    for cell in spec.cells():
        over = spec.overrides(cell, threads=1)
        assert over["train.device"] == "cuda" and over["train.threads"] == 1
    assert "train.device" not in GridSpec.from_params(Params()).overrides(spec.cells()[0])
    assert gpu_room(139 * 2**30) == 69 and gpu_room(int(1.9 * 2**30)) == 0


def test_on_ray_each_run_asks_for_a_memory_sized_share_of_a_gpu_and_none_on_cpu():
    from pipeline.config import Params
    from pipeline.grid import GridSpec, gpu_share
    from pipeline.grid.ray_cluster import gpu_request, is_local_store

    assert gpu_share(139 * 2**30) == 1 / 69 and gpu_share(80 * 2**30) == 1 / 40 and gpu_share(2**30) == 1.0
    cpu_spec = GridSpec.from_params(Params(), device="cpu")
    assert gpu_request(Params(), cpu_spec, cluster_gpus=8) == 0.0       # CPU runs ask for no GPU
    assert gpu_request(Params(), GridSpec.from_params(Params()), cluster_gpus=0) == 0.0  # no GPU in the cluster
    # only a tracking server is reachable from other nodes
    assert is_local_store("sqlite:////x/mlflow.db") and is_local_store("file:///x/mlruns") and is_local_store("/x/mlruns")
    assert not is_local_store("http://10.0.0.1:5000") and not is_local_store("https://mlflow.internal")


def test_the_grids_shared_inputs_are_the_shared_stages_outputs():
    """What a grid's worker is handed is exactly what the stages shared by every run write (dvc.yaml's outs
    of prepare and the two evaluators' stages), and where the stages' modules write them."""
    import yaml

    from pipeline.data import PREPARED_DIR
    from pipeline.evaluator import EVALUATOR_B_FILE, EVALUATOR_FILE
    from pipeline.grid import SHARED_OUTPUTS
    from pipeline.steps.evaluate import FLOOR_B_FILE, FLOOR_FILE

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outs = {Path(next(iter(o)) if isinstance(o, dict) else o)
            for name in ("prepare", "train_evaluator", "train_evaluator_b") for o in stages[name]["outs"]}
    assert set(SHARED_OUTPUTS) == outs
    assert {PREPARED_DIR, EVALUATOR_FILE, EVALUATOR_B_FILE, FLOOR_FILE, FLOOR_B_FILE} <= set(SHARED_OUTPUTS)


@pytest.mark.slow
def test_a_budget_axis_runs_each_budget_and_a_second_run_starts_nothing(tmp_path_factory, prepared):
    """`ablation.axes: {train.steps: [4, 6], attention.gamma_init: [0]}` on the local runner: one finished run
    per budget, its params and record carrying its own steps (not --steps'), the value that MLflow keeps as
    '0.0' found again, so the same command runs nothing the second time; the report contrasts the budgets."""
    import yaml

    from pipeline.records import read_records

    def grid_runs(uri: str, grid: str) -> list:
        client = mlflow.MlflowClient(uri)
        exp = client.get_experiment_by_name("sagan-mnist")
        return client.search_runs([exp.experiment_id], f"tags.`grid.name` = '{grid}'")

    axes = {"train.steps": [4, 6], "attention.gamma_init": [0]}
    repo = make_repo(tmp_path_factory.mktemp("budget") / "repo", template=prepared)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["ablation"]["axes"] = axes  # these axes alone (make_repo's overrides merge with the default axes)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "commit", "-qam", "budget axes"], repo)
    cmd = [sys.executable, "-m", "pipeline.grid", "run", "--runner", "local", "--device", "cpu", "--name", "budget",
           "--steps", "50", "--n-samples", "100", "--seeds", "0", "--jobs", "2"]
    run(cmd, repo, timeout=900)
    store = f"sqlite:///{repo / 'mlflow.db'}"
    runs = [r for r in grid_runs(store, "budget") if r.data.tags.get("grid.parent") != "true"]
    assert sorted(r.data.params["train.steps"] for r in runs) == ["4", "6"]
    assert all(r.info.status == "FINISHED" and "fid" in r.data.metrics for r in runs)
    assert {r.data.tags["grid.cell"] for r in runs} == {"train.steps=4,attention.gamma_init=0.0",
                                                        "train.steps=6,attention.gamma_init=0.0"}
    records = [rec for _, rec in read_records(repo / "results/budget")]
    assert sorted(rec["params"]["train.steps"] for rec in records) == ["4", "6"]
    again = run(cmd, repo, timeout=900)
    assert "0 to run" in again.stderr + again.stdout
    assert len([r for r in grid_runs(store, "budget") if r.data.tags.get("grid.parent") != "true"]) == 2
    report = (repo / "reports/budget/ablation.md").read_text()
    assert "train.steps" in report and "6 − 4" in report
