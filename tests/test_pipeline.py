"""End to end, as a user drives it: real `dvc repro`, `dvc exp run`, MLflow servers, and the MLflow
store read back with the MLflow client (the DVC queue: tests/test_grid.py and tests/test_faults.py)."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from e2e import BROWSER_ARGS, CHROMIUM, ROOT, TINY, deep_update, env, make_repo, mlflow_server, run

# the tests that run DVC, servers or a browser are `slow` (each marked); the in-process ones run in `make test-fast`


# the first `dvc repro`'s run and generator, kept: later tests move the workspace on (`dvc exp run`, a
# tracking server's runs)
FIRST: dict[str, Path] = {}


LOGGED_MODEL = {"mlflow": {"log_model": True}}


@pytest.fixture(scope="module")
def repo(tmp_path_factory, prepared):
    import shutil

    # the default pipeline as a user runs it: each run's generator logged as an MLflow model
    path = make_repo(tmp_path_factory.mktemp("proj") / "repo", LOGGED_MODEL, template=prepared)
    run(["dvc", "repro"], path, timeout=900)
    kept = tmp_path_factory.mktemp("first-run")
    for name in ("run.json", "generator.pt"):
        FIRST[name] = Path(shutil.copy2(path / "models" / name, kept / name))
    return path


def _client(repo):
    return mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")


def _runs(repo, experiment="sagan-mnist"):
    client = _client(repo)
    exp = client.get_experiment_by_name(experiment)
    return client, exp, client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


@pytest.mark.slow
def test_dag_lists_the_stages(repo):
    out = run(["dvc", "dag"], repo).stdout
    for stage in ("check_params", "prepare", "train_evaluator", "train", "sample", "evaluate"):
        assert stage in out


def implausible_scores(ev: dict, n_samples: int, draws: int | None = None) -> list[str]:
    """What is wrong with an evaluator's scores (metrics/evaluate.json, or its `evaluator_b`) as a user reads
    them: each a finite number in its range (FID > 0; the classifier score, exp of a mean KL divergence, in
    [1, 10]; KID may be below 0, its standard error may not; precision, recall and coverage are shares), the
    class histogram covering the samples, the per-draw values averaging to the figure, and the floor (real
    digits against real digits) below the samples' FID."""
    problems = []

    def check(name: str, ok) -> None:
        if not ok:
            problems.append(f"{name} = {ev[name]!r}" if name in ev else name)

    for key in ("fid", "fid_se", "kid", "kid_se", "classifier_score", "classifier_score_se", "classifier_score_std",
                "precision", "recall", "density", "coverage"):
        v = ev.get(key)
        check(key, isinstance(v, float) and math.isfinite(v))
    if problems:
        return problems
    check("fid", ev["fid"] > 0)
    check("fid_se", ev["fid_se"] > 0)
    # a tiny generator's classifier score is 1 in every draw (one class): its SE is then 0, not below
    for key in ("kid_se", "classifier_score_se"):
        check(key, ev[key] >= 0)
    check("classifier_score_std", ev["classifier_score_std"] >= 0)
    check("classifier_score", 1 <= ev["classifier_score"] <= 10)
    for key in ("precision", "recall", "coverage"):
        check(key, 0 <= ev[key] <= 1)
    check("density", ev["density"] >= 0)
    hist = ev.get("class_histogram")
    check("class_histogram", isinstance(hist, list) and len(hist) == 10 and sum(hist) == n_samples
          and min(hist) >= 0)
    check("classes_covered", hist and ev.get("classes_covered") == sum(1 for c in hist if c))
    if draws is not None:
        for key in ("fid", "classifier_score"):
            values = ev.get("per_draw", {}).get(key, [])
            check(f"per_draw.{key}", len(values) == draws and all(math.isfinite(v) for v in values)
                  and abs(sum(values) / draws - ev[key]) <= 1e-4 * max(1.0, ev[key]))
    floor = ev.get("floor", {})
    check("floor.fid", math.isfinite(floor.get("fid", math.nan)) and 0 < floor["fid"] < ev["fid"])
    check("floor.kid", math.isfinite(floor.get("kid", math.nan)))
    check("floor.classifier_score", 1 <= floor.get("classifier_score", 0) <= 10)
    check("floor.precision/recall", all(0 <= floor.get(k, -1) <= 1 for k in ("precision", "recall", "coverage")))
    return problems


@pytest.mark.slow
def test_repro_writes_every_output(repo):
    meta = json.loads((repo / "data/prepared/meta.json").read_text())
    assert meta["n_images"] == 5000 and meta["source"] == "embedded"
    train = json.loads((repo / "metrics/train.json").read_text())
    assert train["steps"] == 6 and "gamma.g28" in train and train["images_per_s"] > 0
    ev = json.loads((repo / "metrics/evaluate.json").read_text())
    n, draws = TINY["evaluate"]["n_samples"], TINY["evaluate"]["draws"]
    assert (ev["n_samples"], ev["draws"]) == (n, draws)
    problems = implausible_scores(ev, n_samples=n, draws=draws)
    assert not problems, problems
    # against the 10,000 t10k digits, whose checksum prepare records; the floor is the estimators' bias there
    assert ev["n_real"] == 10000 and meta["reference"]["n"] == 10000
    # the same samples under evaluator B (its own network, floor and checksum), after every key of A's
    b, floor_b = ev["evaluator_b"], json.loads((repo / "metrics/evaluator_b.json").read_text())
    assert list(ev)[-1] == "evaluator_b" and b["arch"] == floor_b["arch"] == "lenet" and floor_b["features"] == 256
    problems = implausible_scores(b, n_samples=n)
    assert not problems, problems
    for key in ("fid", "classifier_score", "precision", "recall", "density", "coverage"):
        assert key in b["floor"]
    assert b["floor"] == floor_b["floor"] and len(b["checksum"]) == 64 and b["fid"] != ev["fid"]
    for path in ("samples/grid.png", "samples/training.gif", "samples/attention.png", "samples/samples.npz",
                 "models/generator.pt", "plots/train_losses.csv", "plots/class_histogram.csv"):
        assert (repo / path).exists(), path
    assert len((repo / "plots/train_losses.csv").read_text().splitlines()) == 1 + 6


@pytest.mark.slow
def test_mlflow_run_has_params_metrics_artifacts_and_tags(repo):
    client, exp, runs = _runs(repo)
    run_id = json.loads((repo / "models/run.json").read_text())["run_id"]
    r = client.get_run(run_id)
    assert r.info.experiment_id == exp.experiment_id
    assert r.info.status == "FINISHED"
    # the README's link to the runs names experiment 1: what a fresh store gives the project's experiment
    readme = (ROOT / "README.md").read_text()
    assert f"/#/experiments/{exp.experiment_id}/runs?orderByKey=metrics.%60fid%60&orderByAsc=true" \
           "&workflowType=machine_learning" in readme
    assert r.data.params["attention.position"] == "post"
    assert r.data.params["loss.type"] == "hinge"
    assert r.data.params["train.steps"] == "6"
    # a plain `dvc repro` is named for what it is: cell, seed, then what differs from the shipped params
    assert r.info.run_name.startswith("post-hinge-s0 train.steps=6 train.batch_size=16 ") and "more" in r.info.run_name
    for key in ("d_loss", "g_loss", "d_real", "d_fake", "gamma.g14", "gamma.g28", "gamma.d14",
                "images_per_s", "fid_quick", "fid", "classifier_score", "precision", "recall"):
        assert key in r.data.metrics, key
    for key in ("fid", "classifier_score", "precision", "recall", "floor.fid"):
        assert f"evaluator_b.{key}" in r.data.metrics, key
    ev = json.loads((repo / "metrics/evaluate.json").read_text())
    assert r.data.tags["evaluator_b.sha256"] == ev["evaluator_b"]["checksum"] != r.data.tags["evaluator.sha256"]
    assert len(client.get_metric_history(run_id, "d_loss")) == 6
    assert [m.step for m in client.get_metric_history(run_id, "fid_quick")] == [3, 6]
    # full-size evaluations at 0.5, 0.6, ..., 1.0 of the budget (train.full_eval_at; of 6 steps: 3, 4, 5, 6),
    # the last one the
    # evaluate stage's own figures (the same generator and latents; batches of another size)
    # (evaluate's FID and classifier score are the means over evaluate.draws draws: the first is the checkpoint's)
    first_draw = {**{k: v[0] for k, v in ev["per_draw"].items()}, "precision": ev["precision"], "recall": ev["recall"]}
    assert ev["draws"] == 2 and len(ev["per_draw"]["fid"]) == 2 and ev["fid"] == pytest.approx(
        sum(ev["per_draw"]["fid"]) / 2, abs=1e-4) and ev["fid_se"] > 0
    for metric in ("fid", "classifier_score", "precision", "recall"):
        full = client.get_metric_history(run_id, f"full.{metric}")
        assert [m.step for m in full] == [3, 4, 5, 6], metric
        assert full[-1].value == pytest.approx(first_draw[metric], rel=1e-3, abs=1e-3), metric
    tags = r.data.tags
    assert tags["data.source"] == "embedded" and len(tags["data.sha256"]) == 64
    assert tags["git.commit"] != "unknown"
    for pkg in ("torch", "dvc", "mlflow"):
        assert tags[f"version.{pkg}"][0].isdigit()
    names = {a.path for a in client.list_artifacts(run_id, "samples")}
    assert {"samples/grid.png", "samples/training.gif", "samples/attention.png"} <= names
    assert any(a.path == "model/generator.pt" for a in client.list_artifacts(run_id, "model"))
    # artifacts live in the repository's mlruns folder, not in a temporary copy
    assert exp.artifact_location == (repo / "mlruns").as_uri()


@pytest.mark.slow
def test_mlflow_run_follows_mlflow_conventions(repo):
    """What MLflow's own UI and API expect: its source, user and git tags, the prepared data as a
    dataset input, and the generator as a state dict that loads with weights_only=True."""
    import getpass

    import mlflow.pytorch
    import torch

    client, _, _ = _runs(repo)
    run_id = json.loads((repo / "models/run.json").read_text())["run_id"]
    r = client.get_run(run_id)
    tags = r.data.tags
    assert tags["mlflow.source.git.commit"] == tags["git.commit"] != "unknown"
    assert tags["mlflow.user"] == getpass.getuser() and tags["mlflow.source.name"] == "stages.train"
    sha = json.loads((repo / "data/prepared/meta.json").read_text())["sha256"]["x_train"]
    (ds,) = r.inputs.dataset_inputs
    assert ds.dataset.name == "mnist-embedded" and ds.dataset.digest == sha[:16]
    assert {t.key: t.value for t in ds.tags}["mlflow.data.context"] == "training"
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    state = mlflow.pytorch.load_state_dict(f"runs:/{run_id}/generator_state_dict", weights_only=True)
    saved = torch.load(repo / "models/generator.pt", weights_only=True)["generator_ema"]
    assert state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)


@pytest.mark.slow
def test_second_repro_is_cached(repo):
    _, _, before = _runs(repo)
    out = run(["dvc", "repro"], repo).stdout
    assert "didn't change" in out or "Stage 'evaluate' didn't change" in out
    _, _, after = _runs(repo)
    assert len(after) == len(before)


@pytest.mark.slow
def test_operational_keys_rerun_nothing_and_training_keys_rerun_training(repo):
    """dvc.yaml lists the exact keys each stage reads: threads, device, the MLflow experiment's name, whether
    the model is logged ... re-run nothing but the validator; a learning rate re-runs train, sample and
    evaluate only."""
    import yaml

    from pipeline.config import Params, flatten
    from pipeline.checkpoint import OPERATIONAL_KEYS

    # dvc.yaml's train keys are train.* minus the operational ones (snapshot_every shapes an output)
    stage = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["train"]["params"]
    listed = {k for k in stage if isinstance(k, str) and k.startswith("train.")}
    train_keys = {k for k in flatten(Params().to_dict()) if k.startswith("train.")}
    assert listed == train_keys - {f"train.{k}" for k in OPERATIONAL_KEYS if k != "snapshot_every"}

    def repro_with(changes: dict) -> set[str]:
        params = yaml.safe_load((repo / "params.yaml").read_text())
        for dotted, value in changes.items():
            node = params
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node[part]
            node[leaf] = value
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        out = run(["dvc", "repro"], repo, timeout=900).stdout
        return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")}

    run(["git", "checkout", "params.yaml"], repo)
    run(["dvc", "repro"], repo, timeout=900)
    operational = {"train.threads": 2, "train.log_every": 3, "train.checkpoint_every": 2, "train.device": "cpu",
                   "train.compile": "false", "train.attention_kernel": "sdpa", "mlflow.experiment": "renamed",
                   "mlflow.log_model": False}
    try:
        # (the report names the MLflow experiment its runs were logged to)
        assert repro_with(operational) == {"check_params", "report"}
        # the report reads the grids' run records, not this run: it stays as it is
        assert repro_with({"train.lr_g": 0.0003}) == {"check_params", "train", "sample", "evaluate"}
    finally:  # the tests after this one share the repository
        run(["git", "checkout", "params.yaml"], repo)


@pytest.mark.slow
def test_a_change_to_any_module_a_stage_imports_reruns_it(repo):
    """dvc.yaml lists every module a stage imports (tests/test_stage_deps.py): a change to the losses,
    which only training imports, makes `dvc status` name train, and neither prepare, the evaluators nor
    sample; a change to the seeding, which training and the evaluators import, names those three."""
    import json

    def changed_deps() -> dict[str, set[str]]:
        status = json.loads(run(["dvc", "status", "--json"], repo).stdout)
        return {stage: {dep for c in changes if isinstance(c, dict) for dep in c.get("changed deps", {})}
                for stage, changes in status.items()}

    before = changed_deps()

    def stages_naming(module: str) -> set[str]:
        path = repo / module
        original = path.read_text()
        try:
            path.write_text(original + "\n# a change\n")
            after = changed_deps()
        finally:
            path.write_text(original)
        return {stage for stage, deps in after.items() if module in deps - before.get(stage, set())}

    assert stages_naming("pipeline/losses.py") == {"train"}
    assert stages_naming("pipeline/seeding.py") == {"train", "train_evaluator", "train_evaluator_b"}


@pytest.mark.slow
def test_exp_run_with_override_is_its_own_run(repo):
    _, _, before = _runs(repo)
    run(["dvc", "exp", "run", "-S", "attention.position=pre", "-n", "pre-exp"], repo, timeout=900)
    client, exp, after = _runs(repo)
    new = [r for r in after if r.info.run_id not in {b.info.run_id for b in before}]
    assert len(new) == 1
    r = new[0]
    assert r.data.params["attention.position"] == "pre"
    assert r.data.tags["dvc.exp_name"] == "pre-exp"
    assert r.data.tags["dvc.baseline_rev"]
    assert r.info.status == "FINISHED" and "fid" in r.data.metrics
    # the shared stages came from the cache: still one evaluator, trained once
    shown = run(["dvc", "exp", "show", "--json"], repo).stdout
    assert "pre-exp" in shown
    # what a user reads in an 80-column terminal: the experiment, then fid and classifier_score, each with its
    # standard error (precision and recall next), not the evaluator's floor, the data's description or the
    # run's runtime facts
    header, *rows = run(["dvc", "exp", "show", "--csv"], repo).stdout.splitlines()
    columns = header.split(",")
    metrics = [c for c in columns if c not in ("Experiment", "rev", "typ", "Created", "parent", "State", "Executor")]
    assert metrics[:6] == ["fid", "fid_se", "classifier_score", "classifier_score_se", "precision", "recall"], \
        columns[:12]
    assert not any(c.startswith(("floor", "metrics/evaluator.json", "runtime", "accuracy", "d_loss")) for c in
                   columns[:columns.index("recall") + 1])
    assert any(row.startswith("pre-exp,") for row in rows)
    # the run's other figures stay a command away
    assert "d_loss" in run(["dvc", "metrics", "show", "metrics/train.json"], repo).stdout


# (override, the key its error must name): one of each kind of error, through the stage's entry point (every
# bad value, and every rule, is a unit case in tests/test_config.py): a choice, a type, a range, NaN, a rule
# across keys, what this machine lacks
BAD_OVERRIDES = [
    ("attention.position=sideways", "attention.position"), ("train.batch_size=abc", "train.batch_size"),
    ("train.steps=0", "train.steps"), ("train.lr_g=nan", "train.lr_g"), ("evaluate.n_samples=300000", "evaluate.n_samples"),
]
if not __import__("torch").cuda.is_available():
    BAD_OVERRIDES.append(("train.device=cuda", "train.device"))


# a key params.yaml lacks: DVC itself refuses it (checked with real `dvc exp run` below)
UNKNOWN_KEY_OVERRIDE = ("loss.typ=bce", "loss.typ")


def _check_params_in_process(params_file: Path, override: str, monkeypatch, capsys) -> tuple[int, str, bool]:
    """What `dvc exp run -S override` does up to and including the check_params stage, in this process, for
    a key params.yaml has: writes the YAML-parsed value into params.yaml and runs `python -m
    stages.check_params`, whose entry point this calls."""
    import runpy
    import sys

    key, value = override.split("=", 1)
    params = yaml.safe_load(params_file.read_text())
    node = params
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    assert isinstance(node, dict) and leaf in node, f"{key} is not in params.yaml: DVC refuses it before check_params"
    node[leaf] = yaml.safe_load(value)
    work = params_file.parent / "override"
    work.mkdir(exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "argv", ["check_params"])
    code = 0
    try:
        runpy.run_module("stages.check_params", run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return code, out.out + out.err, (work / "data/params.ok").exists()


@pytest.mark.parametrize("override,key", BAD_OVERRIDES, ids=[o for o, _ in BAD_OVERRIDES])
def test_each_bad_override_is_refused_by_check_params_with_one_line(override, key, tmp_path, monkeypatch, capsys):
    """Every bad value stops in check_params (the stage every other stage depends on, so DVC deletes
    nothing): exit 2, exactly one line naming the key, the value and what is allowed, no traceback,
    no marker written."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    deep_update(params, TINY)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    code, out, marker = _check_params_in_process(tmp_path / "params.yaml", override, monkeypatch, capsys)
    lines = [ln for ln in out.splitlines() if ln.startswith("error (check_params)")]
    assert code == 2 and not marker and "Traceback" not in out, out
    assert len(lines) == 1 and f"`{key}`" in lines[0], out
    assert any(w in lines[0] for w in ("expected", "Allowed keys")), lines[0]


@pytest.mark.slow
def test_bad_overrides_through_dvc_exp_run_fail_in_seconds_and_touch_nothing(repo):
    """The wiring, with real `dvc exp run -S`: a bad type, a range, a rule across keys, NaN and a key
    params.yaml lacks each exit non-zero within seconds with one line (DVC's own refusal for the key params.yaml
    lacks, naming it), no
    traceback, no MLflow run, every earlier output byte-identical (one of each kind in-process above; every
    bad value in tests/test_config.py)."""
    import time

    wired = ["train.batch_size=abc", "train.steps=0", "evaluate.n_samples=300000", "train.lr_g=nan", "loss.typ=bce"]
    outputs = ("metrics/train.json", "plots/train_losses.csv", "models/generator.pt", "data/prepared/meta.json",
               "metrics/evaluate.json", "models/evaluator.pt", "samples/samples.npz")
    _, _, before = _runs(repo)
    kept = {path: (repo / path).read_bytes() for path in outputs}
    problems, slowest = [], 0.0
    for override, key in [(o, k) for o, k in BAD_OVERRIDES + [UNKNOWN_KEY_OVERRIDE] if o in wired]:
        t0 = time.monotonic()
        res = run(["dvc", "exp", "run", "-S", override], repo, check=False)
        slowest = max(slowest, time.monotonic() - t0)
        run(["git", "checkout", "params.yaml"], repo)
        out = res.stdout + res.stderr
        lines = [ln for ln in out.splitlines() if ln.startswith("error (check_params)")]
        refused_by_dvc = "Invalid `--set-param` value" in out and f"'{key}'" in out
        ours = len(lines) == 1 and f"`{key}`" in lines[0] and any(w in lines[0] for w in ("expected", "Allowed keys"))
        expected = refused_by_dvc if (override, key) == UNKNOWN_KEY_OVERRIDE else ours
        if res.returncode == 0 or "Traceback" in out or not expected:
            problems.append((override, res.returncode, out[-600:]))
    assert not problems, problems
    assert slowest < 60, f"the slowest bad override took {slowest:.0f} s"
    _, _, after = _runs(repo)
    assert len(after) == len(before)
    # the previous run's outputs are untouched (DVC deletes a stage's outputs before re-running it)
    for path, content in kept.items():
        assert (repo / path).exists() and (repo / path).read_bytes() == content, path


@pytest.mark.slow
def test_plots_render_offline_in_a_browser(repo, tmp_path):
    """`dvc plots show` uses the shipped template, which inlines vega: no CDN, it renders offline."""
    from playwright.sync_api import sync_playwright

    out = tmp_path / "plots"
    run(["dvc", "plots", "show", "-o", str(out)], repo)
    html = (out / "index.html").read_text()
    assert "cdn.jsdelivr" not in html and "vegaEmbed" in html
    assert "var spec = {};" not in html  # every plot has data
    diff = tmp_path / "diff"
    run(["dvc", "plots", "diff", "HEAD", "-o", str(diff)], repo)
    assert (diff / "index.html").exists()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        try:
            page = browser.new_page()
            page.goto((out / "index.html").as_uri())
            # drawn = a chart element with a non-zero size (vega leaves a 0x0 canvas when it cannot draw)
            drawn = """() => [...document.querySelectorAll('svg.marks, canvas.marks')]
                             .filter(e => e.getBoundingClientRect().width > 0).length"""
            page.wait_for_function(f"({drawn})() >= 6", timeout=30_000)
            titles = page.locator("div[id]").evaluate_all("els => els.map(e => e.id)")
            page.screenshot(path=str(_screenshot_dir(tmp_path) / "dvc-plots.png"), full_page=True)
        finally:
            browser.close()
    for plot in ("losses", "discriminator_outputs", "quick_FID_during_training", "FID_at_the_checkpoints",
                 "classifier_score_at_the_checkpoints", "class_histogram_of_generated_digits"):
        assert plot in titles
    # the FID plots on a log axis: the last half of training, where cells differ, is not a flat line
    for plot in ("quick_FID_during_training", "FID_at_the_checkpoints"):
        spec = html.split(f'<div id = "{plot}">', 1)[1].split("<div id", 1)[0]
        assert '"type": "log"' in spec, plot
    assert (repo / "plots/train_full_eval.csv").read_text().splitlines()[0] == \
        "step,fid,kid,classifier_score,precision,recall"


@pytest.mark.slow
def test_every_failure_after_training_ends_the_run_failed(tmp_path, prepared):
    """A stage that fails after training (here: metrics/train.json cannot be written) must not leave
    a RUNNING run behind in the MLflow UI."""
    import sys

    path = make_repo(tmp_path / "repo", template=prepared)
    (path / "metrics" / "train.json").mkdir(parents=True)  # a folder where the file goes: the write fails
    res = run([sys.executable, "-m", "stages.train"], path, check=False)
    assert res.returncode != 0
    client, _, runs = _runs(path)
    assert [r.info.status for r in runs] == ["FAILED"]
    assert (path / "models/generator.pt").exists()  # training itself had finished


@pytest.mark.slow
def test_a_tracking_server_that_is_down_stops_the_stage_at_once(repo):
    """MLflow alone retries an unreachable server for minutes, then dies with a traceback; the stage
    stops first, in seconds, with one line naming the URI and the fix, before touching any output."""
    import time

    from e2e import free_port

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    kept = (repo / "metrics/train.json").read_bytes()
    t0 = time.monotonic()
    res = run(["dvc", "exp", "run", "-S", "seed=11"], repo, check=False, env={**env(), "MLFLOW_TRACKING_URI": uri})
    elapsed = time.monotonic() - t0
    run(["git", "checkout", "params.yaml"], repo)
    assert res.returncode != 0 and elapsed < 60, elapsed
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("error (")]
    assert len(lines) == 1 and uri in lines[0] and "unreachable" in lines[0] and "MLFLOW_TRACKING_URI" in lines[0]
    assert "Traceback" not in res.stderr
    assert (repo / "metrics/train.json").read_bytes() == kept


@pytest.mark.slow
def test_team_server_with_authentication(repo, tmp_path):
    """The README's team server: MLFLOW_TRACKING_URI names a server with a SQL backend, an artifact
    destination and MLflow's basic-auth app. It refuses anonymous requests, a wrong password stops the
    pipeline at its first stage with one line, and with credentials from the environment the run, its
    metrics and its images land on the server (artifacts at its destination), not in the local store."""
    import urllib.error
    import urllib.request

    _, _, local_before = _runs(repo)
    artifacts = tmp_path / "artifacts"

    ini = tmp_path / "auth.ini"
    ini.write_text("[mlflow]\ndefault_permission = READ\n"
                   f"database_uri = sqlite:///{tmp_path / 'auth.db'}\nadmin_username = admin\n"
                   "admin_password = team-Passw0rd-1\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    with mlflow_server(f"sqlite:///{tmp_path / 'team.db'}", tmp_path, artifacts, auth_config=ini) as url:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
        assert refused.value.code == 401
        creds = {**env(), "MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": "admin"}
        wrong = run(["dvc", "exp", "run", "-S", "seed=12"], repo, check=False,
                    env={**creds, "MLFLOW_TRACKING_PASSWORD": "wrong"})
        run(["git", "checkout", "params.yaml"], repo)
        assert wrong.returncode != 0 and "refused the request (HTTP 401)" in wrong.stderr + wrong.stdout
        run(["dvc", "exp", "run", "-n", "authed", "-S", "seed=12"], repo,
            env={**creds, "MLFLOW_TRACKING_PASSWORD": "team-Passw0rd-1"})
        run(["git", "checkout", "params.yaml"], repo)
        import os

        os.environ.update({"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "team-Passw0rd-1"})
        try:
            client = mlflow.MlflowClient(url)
            exp = client.get_experiment_by_name("sagan-mnist")
            (r,) = client.search_runs([exp.experiment_id])
            names = {a.path for a in client.list_artifacts(r.info.run_id, "samples")}
        finally:
            os.environ.pop("MLFLOW_TRACKING_USERNAME")
            os.environ.pop("MLFLOW_TRACKING_PASSWORD")
        assert r.info.status == "FINISHED" and r.data.params["seed"] == "12" and "fid" in r.data.metrics
        assert "samples/grid.png" in names
    assert list(artifacts.rglob("grid.png"))  # stored at the server's artifact destination
    _, _, local_after = _runs(repo)
    assert len(local_after) == len(local_before)


def test_run_names_say_what_a_run_is():
    from pipeline.config import Params, with_override
    from pipeline.tracking import default_run_name

    assert default_run_name(Params()) == "post-hinge-s0"
    # where and how fast it ran is not what it is
    assert default_run_name(with_override(Params(), {"attention.position": "pre", "seed": 3, "train.threads": 1,
                                                     "mlflow.experiment": "x"})) == "pre-hinge-s3"
    many = with_override(Params(), {"train.steps": 6, "train.ema_start": 2, "train.batch_size": 16, "train.lr_g": 0.001,
                                    "sample.n": 200, "evaluate.n_samples": 100, "evaluate.draws": 2})
    assert default_run_name(many) == "post-hinge-s0 train.steps=6 train.batch_size=16 train.lr_g=0.001 +4 more"


def test_ui_links_go_to_the_runs():
    from pipeline.tracking import ui_url

    assert ui_url("1", uri="sqlite:///x/mlflow.db") == \
        "http://127.0.0.1:5000/#/experiments/1/runs?orderByKey=metrics.%60fid%60&orderByAsc=true" \
        "&workflowType=machine_learning"
    assert ui_url("3", "abc", uri="https://mlflow.internal/") == \
        "https://mlflow.internal/#/experiments/3/runs/abc?workflowType=machine_learning"


# ---------------------------------------------------------------- the generator as an MLflow model

def _screenshot_dir(tmp_path: Path) -> Path:
    """Where browser tests keep their screenshots: $SAGAN_TEST_ARTIFACTS (CI keeps it), else test-artifacts/."""
    import os

    folder = Path(os.environ.get("SAGAN_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.slow
def test_the_generator_is_an_mlflow_model_a_user_loads_samples_and_serves(repo, tmp_path):
    """runs:/<id>/generator: loaded in a fresh process it gives the same images as models/generator.pt (SDPA
    attention, as exported) bit for bit; pyfunc and `mlflow models predict` give (n, 1, 28, 28) in [0, 1];
    its page carries the run's scores and params; `python -m pipeline.generate` writes digits."""
    import sys

    import numpy as np
    import torch

    from pipeline import fast_attention
    from pipeline.draws import fixed_latent
    from pipeline.generator_model import ImagesFromLatents
    from pipeline.sampling import load_generator
    from pipeline.tracking import logged_model_id

    client, exp, _ = _runs(repo)
    run_id = json.loads(FIRST["run.json"].read_text())["run_id"]
    uri = f"runs:/{run_id}/generator"
    store = {**env(), "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}
    loaded = tmp_path / "loaded.npy"
    script = ("import sys, mlflow.pytorch, numpy as np, torch\n"
              "from pipeline.draws import fixed_latent\n"
              f"m = mlflow.pytorch.load_model({uri!r})\n"
              "with torch.no_grad():\n"
              f"    np.save({str(loaded)!r}, m(fixed_latent(8, 100, 0)).numpy())\n")
    run([sys.executable, "-c", script], repo, env=store)
    old = fast_attention.mode()
    fast_attention.set_mode("sdpa")
    try:
        with torch.no_grad():
            expected = ImagesFromLatents(load_generator(FIRST["generator.pt"]))(fixed_latent(8, 100, 0)).numpy()
    finally:
        fast_attention.set_mode(old)
    assert np.array_equal(np.load(loaded), expected)

    mlflow.set_tracking_uri(store["MLFLOW_TRACKING_URI"])
    z = fixed_latent(5, 100, 1).numpy()
    images = mlflow.pyfunc.load_model(uri).predict(z)
    assert images.shape == (5, 1, 28, 28) and images.dtype == np.float32 and 0 <= images.min() <= images.max() <= 1
    (tmp_path / "z.json").write_text(json.dumps({"inputs": z[:2].tolist()}))
    run(["mlflow", "models", "predict", "-m", uri, "-i", str(tmp_path / "z.json"), "-o", str(tmp_path / "out.json"),
         "--env-manager", "local"], repo, env=store)
    predicted = np.array(json.loads((tmp_path / "out.json").read_text())["predictions"], dtype=np.float32)
    assert predicted.shape == (2, 1, 28, 28) and np.allclose(predicted, images[:2], atol=1e-6)

    model = client.get_logged_model(logged_model_id(run_id, "generator", client))
    scores = {m.key: m.value for m in model.metrics}
    run_metrics = client.get_run(run_id).data.metrics
    assert scores["fid"] == run_metrics["fid"] and scores["classifier_score"] == run_metrics["classifier_score"]
    assert model.params["attention.position"] == "post" and model.name == "generator"
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"

    out = tmp_path / "digits.png"
    run([sys.executable, "-m", "pipeline.generate", "--model", uri, "-n", "16", "-o", str(out),
         "--npy", str(tmp_path / "digits.npy")], repo, env=store)
    digits = np.load(tmp_path / "digits.npy")
    assert out.stat().st_size > 0 and digits.shape == (16, 28, 28) and digits.dtype == np.uint8
    best = run([sys.executable, "-m", "pipeline.generate", "--model", "best", "-n", "4", "-o", str(tmp_path / "b.png")],
               repo, env=store)
    fids = {r.info.run_id: r.data.metrics["fid"] for r in client.search_runs([exp.experiment_id])
            if logged_model_id(r.info.run_id, "generator", client) and "fid" in r.data.metrics}
    assert f"runs:/{min(fids, key=fids.get)}/generator" in best.stderr + best.stdout
    bad = run([sys.executable, "-m", "pipeline.generate", "--model", "runs:/0123abcd/generator"], repo,
              env=store, check=False)
    assert bad.returncode == 2 and "runs:/<run id>/generator" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_register_model_makes_a_version_a_run(tmp_path, prepared):
    """mlflow.register_model (off by default) registers each trained generator: version 1, then 2."""
    import sys

    path = make_repo(tmp_path / "repo", {"mlflow": {"register_model": "sagan-test", "log_model": True}}, template=prepared)
    for _ in range(2):
        run([sys.executable, "-m", "stages.train"], path)
    client, _, runs = _runs(path)
    versions = sorted(client.search_model_versions("name = 'sagan-test'"), key=lambda v: int(v.version))
    assert [str(v.version) for v in versions] == ["1", "2"]
    assert [v.run_id for v in versions] == [r.info.run_id for r in runs]
    mlflow.set_tracking_uri(f"sqlite:///{path / 'mlflow.db'}")
    assert mlflow.pytorch.load_model("models:/sagan-test/2") is not None


@pytest.mark.slow
def test_mlflow_ui_shows_the_logged_model_in_model_training_mode(repo, tmp_path):
    """The links the stages print open MLflow 3's "Model training" mode (not GenAI's Traces, Judges, Prompts);
    the run's page lists its logged model `generator` beside the scores it carries."""
    from playwright.sync_api import sync_playwright

    from pipeline.tracking import ui_url

    client, exp, _ = _runs(repo)
    run_id = json.loads(FIRST["run.json"].read_text())["run_id"]
    shots = _screenshot_dir(tmp_path)
    with mlflow_server(f"sqlite:///{repo / 'mlflow.db'}", repo) as url:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.goto(ui_url(exp.experiment_id, run_id, uri=url))
                page.get_by_text("Model registry").first.wait_for(timeout=60_000)
                page.get_by_text("classifier_score_se").first.wait_for(timeout=60_000)
                # the metrics table shows each metric's model once the page has fetched the logged models
                # (a second request, later than the metrics on a busy machine): read it once it has
                deadline = time.time() + 60
                while True:
                    run_page = page.inner_text("body")
                    lines = run_page.splitlines()
                    shown = "fid" in lines and lines[lines.index("fid") + 2:][:1] == ["generator"]
                    if shown or time.time() > deadline:
                        break
                    page.wait_for_timeout(500)
                page.screenshot(path=str(shots / "mlflow-run-page.png"), full_page=True)
                page.goto(ui_url(exp.experiment_id, uri=url))
                page.get_by_text("matching run").first.wait_for(timeout=60_000)
                page.screenshot(path=str(shots / "mlflow-runs.png"), full_page=True)
                runs_page = page.inner_text("body")
            finally:
                browser.close()
    for genai_only in ("Judges", "Prompts", "Agent versions"):
        assert genai_only not in run_page and genai_only not in runs_page, genai_only
    lines = run_page.splitlines()
    i = lines.index("fid")
    assert lines[i + 2] == "generator"  # metric, value, the model it describes
    assert "Model registry" in runs_page and "Sort: fid" in runs_page
