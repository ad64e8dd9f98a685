"""Fault injection, as things fail for real: `kill -9` in the middle of each stage after the shared ones, two `dvc repro` at
once, and a tracking server that goes away in the middle of a training. Each fault must be survived
(a rerun completes, outputs identical to an uninterrupted run) and lose nothing. The run prints a
tally: faults tried, survived, outputs lost."""
from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import psutil
import pytest
import torch

from conftest import FAULTS
from e2e import env, free_port, make_repo, mlflow_server, repro_watching_stages, run, stage_children

pytestmark = pytest.mark.slow

# the stages after the shared ones (prepare and the evaluators, which write through the same atomic
# helpers: tests/test_fileio.py): each killed once, in its work
STAGES = ["train", "sample", "evaluate", "report"]
# a training long enough to have written checkpoints when it is killed (the resume path)
SLOWER = {"train": {"steps": 20, "checkpoint_every": 4, "eval_every": 10, "ema_start": 4},
          "sample": {"n": 400}, "evaluate": {"n_samples": 200}}

def _outputs(repo: Path) -> dict[str, object]:
    """What a user compares between two runs: arrays and weights exactly, metrics without timings."""
    out: dict[str, object] = {}
    with np.load(repo / "data/prepared/mnist.npz") as z:
        out.update({f"prepared.{k}": z[k].tobytes() for k in z.files})
    for name in ("models/evaluator.pt", "models/evaluator_b.pt", "models/generator.pt"):
        state = torch.load(repo / name, weights_only=True)
        flat = state if "generator" not in state else {**state["generator"], **{f"ema.{k}": v for k, v in
                                                                                 state["generator_ema"].items()}}
        out.update({f"{name}:{k}": v.numpy().tobytes() for k, v in flat.items() if isinstance(v, torch.Tensor)})
    with np.load(repo / "samples/samples.npz") as z:
        out["samples"] = z["images"].tobytes()
    timing = {"images_per_s", "wall_s", "seconds", "runtime"}
    for name in ("metrics/train.json", "metrics/evaluate.json", "metrics/evaluator.json", "metrics/evaluator_b.json"):
        data = json.loads((repo / name).read_text())
        out[name] = {k: v for k, v in data.items() if k not in timing and "seconds" not in k}
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory, prepared):
    """An uninterrupted run's outputs, and the CPU seconds each stage used."""
    repo = make_repo(tmp_path_factory.mktemp("ref") / "repo", SLOWER, template=prepared)
    cpu_seconds = repro_watching_stages(repo)
    return _outputs(repo), cpu_seconds


def _stage_process(name: str, repo: Path) -> psutil.Process | None:
    """The running stage `name` of this repository, started by DVC's queue workers (not our children;
    queued experiments run in a copy inside the repository); never another test's."""
    root = str(repo.resolve())
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        if f"stages.{name}" in (proc.info.get("cmdline") or []) and \
                (proc.info.get("cwd") or "").startswith(root):
            return proc
    return None


def _run_and_kill(cmd: list[str], repo: Path, stage: str, cpu_s: float) -> bool:
    """Runs cmd; kills its stage `stage` with SIGKILL once that has used cpu_s CPU seconds. False if it
    ended first."""
    proc = subprocess.Popen(cmd, cwd=repo, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline, target, done = time.time() + 600, None, False
    while time.time() < deadline and proc.poll() is None:
        target = target or stage_children(proc).get(stage)
        if target is not None:
            try:
                cpu = target.cpu_times()
                if cpu.user + cpu.system >= cpu_s:
                    target.send_signal(signal.SIGKILL)
                    done = True
                    break
            except psutil.NoSuchProcess:
                break
        time.sleep(0.05)
    proc.wait(timeout=600)
    return done


def test_kill_9_in_each_stage_then_rerun_gives_the_same_outputs(reference, prepared, tmp_path):
    """`dvc repro <stage>`, its stage killed with SIGKILL once it has used a random 40-80% of the CPU
    time it took uninterrupted (its imports take the first part, so it dies in its work: a training
    after some checkpoints; a stage's CPU time varies by ~15% from run to run: one that ends first runs
    again, killed at half that share); then `dvc repro`. The final outputs equal an uninterrupted run's (fp32, one
    thread)."""
    expected, cpu_seconds = reference
    rng = random.Random(0)
    repo = make_repo(tmp_path / "repo", SLOWER, template=prepared)
    killed = []
    for stage in STAGES:
        FAULTS["tried"] += 1
        threshold = rng.uniform(0.4, 0.8) * cpu_seconds[stage]
        for attempt in range(3):  # a stage that ends first (its CPU time varies) runs again, killed earlier
            cmd = ["dvc", "repro", stage] if attempt == 0 else ["dvc", "repro", "-f", "-s", stage]
            if _run_and_kill(cmd, repo, stage, threshold / 2 ** attempt):
                killed.append(stage)
                break
    res = run(["dvc", "repro"], repo, timeout=900)
    assert "Traceback" not in res.stderr
    assert killed == STAGES, killed
    now = _outputs(repo)
    lost = [k for k in expected if now.get(k) != expected[k]]
    FAULTS["survived"] += len(STAGES) if not lost else 0
    FAULTS["outputs_lost"] += len(lost)
    assert not lost, lost[:10]


def test_two_repros_at_once_the_second_is_refused_and_nothing_breaks(tmp_path, prepared):
    FAULTS["tried"] += 1
    repo = make_repo(tmp_path / "repo", template=prepared)
    # the first holds the lock through its training (DVC locks the whole repository for any repro)
    first = subprocess.Popen(["dvc", "repro", "train"], cwd=repo, env=env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while stage_children(first).get("train") is None and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    second = run(["dvc", "repro"], repo, check=False, timeout=300)
    out, err = first.communicate(timeout=900)
    assert second.returncode != 0 and "lock" in (second.stderr + second.stdout).lower()
    assert first.returncode == 0, err[-2000:]
    assert run(["dvc", "status"], repo).returncode == 0
    FAULTS["survived"] += 1


def test_tracking_server_going_away_mid_training_loses_nothing(tmp_path, prepared, monkeypatch):
    """The server stops while a training runs: the training finishes, its DVC outputs are written,
    the run's metrics, artifacts and end wait in mlflow-pending/, and `python -m pipeline.tracking sync`
    sends them once the server is back: a FINISHED run with every step's losses.

    Losses logged every step fill a batch (RunLogger.BATCH values) about 40% into the run, so the
    server has stored part of the run when it goes; the training is paused (SIGSTOP) while the server
    stops, so it is still mid-run then on a CPU of any speed."""
    FAULTS["tried"] += 1
    steps = 400
    repo = make_repo(tmp_path / "repo", {"train": {"steps": steps, "log_every": 1, "checkpoint_every": 100,
                                                   "eval_every": 0, "snapshot_every": 0, "ema_start": 5,
                                                   "batch_size": 8}}, template=prepared)
    port = free_port()
    store = f"sqlite:///{tmp_path / 'team.db'}"
    # no restart is coming: the run's end waits 2 s for the server, not 30
    e = {**env(), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}", "SAGAN_MLFLOW_GRACE_S": "2"}
    with mlflow_server(store, tmp_path, tmp_path / "artifacts", port=port) as url:
        train = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=repo, env=e, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        client = mlflow.MlflowClient(url)
        deadline = time.time() + 300
        stored = []
        while time.time() < deadline and train.poll() is None:
            exp = client.get_experiment_by_name("sagan-mnist")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            if runs and (stored := client.get_metric_history(runs[0].info.run_id, "d_loss")):
                break
            time.sleep(0.1)
        assert train.poll() is None, "the training ended before the server stored any of it"
        psutil.Process(train.pid).suspend()
        run_id = runs[0].info.run_id
    # the server is gone; training goes on
    psutil.Process(train.pid).resume()
    log, _ = train.communicate(timeout=900)
    assert train.returncode == 0, log[-3000:]
    assert "unreachable" in log and "mlflow-pending" in log
    assert 0 < max(m.step for m in stored) < steps  # the server had part of the run, not all of it
    assert json.loads((repo / "metrics/train.json").read_text())["steps"] == steps
    pending = repo / "mlflow-pending" / f"{run_id}.json"
    assert pending.exists() and json.loads(pending.read_text())["status"] == "FINISHED"
    # a dataset input logged while the server is away (the train stage logs one right after it opens a
    # run) waits beside the rest instead of stopping the stage
    from pipeline import tracking

    for key, value in e.items():
        if key.startswith(("MLFLOW_", "DVC_")):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("DVC_ROOT", str(repo))
    tracking.log_dataset(run_id, np.zeros((8, 28, 28), np.uint8), np.arange(8),
                         {"source": "embedded", "sha256": {"x_train": "ab" * 32}}, context="held-out")
    assert [i["context"] for i in json.loads(pending.read_text())["inputs"]] == ["held-out"]
    with mlflow_server(store, tmp_path, tmp_path / "artifacts", port=port) as url:
        run([sys.executable, "-m", "pipeline.tracking", "sync"], repo, env=e)
        client = mlflow.MlflowClient(url)
        r = client.get_run(run_id)
        assert r.info.status == "FINISHED"
        # (a batch the server stored just before it died may come twice: the steps count, not the rows)
        assert {m.step for m in client.get_metric_history(run_id, "d_loss")} == set(range(1, steps + 1))
        assert any(a.path == "model" for a in client.list_artifacts(run_id))
        contexts = {t.value for i in r.inputs.dataset_inputs for t in i.tags if t.key == "mlflow.data.context"}
        assert contexts == {"training", "held-out"}
    assert not pending.exists()
    FAULTS["survived"] += 1


def test_queued_experiments_survive_a_tracking_server_restart(tmp_path, prepared):
    """Two queued experiments, one worker, the team server restarted while the first one trains (the
    second starts after): two FINISHED runs with every step's losses and their evaluation, all in the
    right experiment.
    That training is paused (SIGSTOP) while the server stops, so it goes on without the server while
    the new one starts, on a CPU of any speed."""
    from pipeline.grid import kill_lingering_workers

    FAULTS["tried"] += 1
    steps = 200
    repo = make_repo(tmp_path / "repo", {"train": {"steps": steps, "batch_size": 8, "eval_every": 0,
                                                   "snapshot_every": 0}},
                     template=prepared)
    port = free_port()
    store = f"sqlite:///{tmp_path / 'team.db'}"
    e = {**env(), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    seeds = [21, 22]
    try:
        with mlflow_server(store, tmp_path, tmp_path / "artifacts", port=port) as url:
            for seed in seeds:
                run(["dvc", "exp", "run", "--queue", "-S", f"seed={seed}"], repo, env=e)
            # not captured: the workers inherit the starter's output and would hold a pipe open to the end
            subprocess.run(["dvc", "queue", "start", "-j", "1"], cwd=repo, env=e, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True, timeout=120)
            trains: dict[int, psutil.Process] = {}
            deadline = time.time() + 900
            while not trains and time.time() < deadline:
                proc = _stage_process("train", repo)
                if proc is not None:
                    trains.setdefault(proc.pid, proc)
                time.sleep(0.05)
            assert trains, f"the first experiment's training never started: {run(['dvc', 'queue', 'status'], repo, check=False).stdout}"
            client = mlflow.MlflowClient(url)
            while time.time() < deadline:  # its run is open (params, dataset input): it is training now
                exp = client.get_experiment_by_name("sagan-mnist")  # the first run creates it
                started = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"]) if exp else []
                if started and client.get_run(started[0].info.run_id).inputs.dataset_inputs:
                    break
                time.sleep(0.05)
            training = list(trains.values())[-1]
            with contextlib.suppress(psutil.NoSuchProcess):
                training.suspend()
        # stopped; the training goes on without it, and the server is up again on the same port
        with contextlib.suppress(psutil.NoSuchProcess):
            training.resume()
        with mlflow_server(store, tmp_path, tmp_path / "artifacts", port=port) as url:
            client = mlflow.MlflowClient(url)
            deadline = time.time() + 900
            while time.time() < deadline:
                exp = client.get_experiment_by_name("sagan-mnist")
                done = [r for r in client.search_runs([exp.experiment_id]) if "fid" in r.data.metrics]
                if len(done) == len(seeds):
                    break
                time.sleep(2)
            runs = client.search_runs([exp.experiment_id])
            histories = {r.info.run_id: {m.step for m in client.get_metric_history(r.info.run_id, "d_loss")}
                         for r in runs}
            default = client.get_experiment_by_name("Default")
            strays = client.search_runs([default.experiment_id]) if default else []
    finally:
        run(["dvc", "queue", "stop"], repo, check=False)
        kill_lingering_workers(repo.resolve(), grace_s=30)
    assert sorted(int(r.data.params["seed"]) for r in runs) == seeds
    for r in runs:
        assert r.info.status == "FINISHED" and "fid" in r.data.metrics, r.data.params["seed"]
        assert histories[r.info.run_id] == set(range(1, steps + 1)), r.data.params["seed"]
    assert not strays
    FAULTS["survived"] += 1

