"""The grid on a Ray cluster (`--runner ray --address`): a real two-node cluster on 127.0.0.1
(ray.cluster_utils.Cluster: a head and a worker, 1 CPU each) and a real `mlflow server` that proxies
artifacts, so nothing is shared but the server. Then the faults: a cell that fails by itself, the
driver killed mid-grid, a node lost while it trains."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import psutil
import pytest

from e2e import env, make_repo, mlflow_server, run

pytestmark = pytest.mark.slow

AXES = {"attention.position": ["post"], "loss.type": ["hinge", "bce"]}
CELLS = ["attention.position=post,loss.type=hinge", "attention.position=post,loss.type=bce"]


def grid_cmd(name: str, seeds=("0", "1"), address: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "pipeline.grid", "run", "--runner", "ray", "--name", name, "--steps", "4",
           "--n-samples", "100", "--seeds", *seeds, "--jobs", "2", "--device", "cpu"]
    return cmd + (["--address", address] if address else [])


# Ray resolves 127.0.0.1 to the machine's address unless it thinks clusters are off: a cluster bound to the
# loopback then works for its nodes, its drivers and their workers (Ray's get_node_ip_address)
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """Two Ray nodes on 127.0.0.1, 1 CPU each; a dead node noticed within ~5 s (not less: on two busy
    cores a live node can miss a beat); stopped at the end (only the processes the cluster started)."""
    os.environ.update(LOOPBACK)
    import ray._private.ray_constants as ray_constants
    from ray.cluster_utils import Cluster

    ray_constants.ENABLE_RAY_CLUSTER = False  # in case ray was imported before the line above
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False,
        "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 5,
                           "health_check_initial_delay_ms": 0,
                           # Ray's default (15) starves the cells beside the other tests on two cores
                           "worker_niceness": 0}})
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    try:
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A tracking server with a SQLite store that serves artifacts (`mlflow-artifacts:` URIs): workers
    upload through it, as on a cluster without a shared disk."""
    folder = tmp_path_factory.mktemp("server")
    with mlflow_server(f"sqlite:///{folder / 'mlflow.db'}", folder, artifacts=folder / "artifacts") as url:
        yield url


@pytest.fixture(scope="module")
def cluster_env(ray_cluster, server, tmp_path_factory):
    e = env()
    e["MLFLOW_TRACKING_URI"] = server
    e["SAGAN_GRID_WORKDIR"] = str(tmp_path_factory.mktemp("ray-work"))
    e["SAGAN_MLFLOW_GRACE_S"] = "5"
    e.update(LOOPBACK)
    return e


@pytest.fixture(scope="module")
def ray_grid(ray_cluster, cluster_env, tmp_path_factory, prepared):
    repo = make_repo(tmp_path_factory.mktemp("raygrid") / "repo", {"ablation": {"axes": AXES}}, template=prepared)
    res = run(grid_cmd("rg", address=ray_cluster.address), repo, env=cluster_env, timeout=900)
    return repo, res


def grid_runs(uri: str, grid: str) -> list:
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("sagan-mnist")
    return client.search_runs([exp.experiment_id], f"tags.`grid.name` = '{grid}'") if exp else []


def children(uri: str, grid: str) -> list:
    return [r for r in grid_runs(uri, grid) if r.data.tags.get("grid.parent") != "true"]


def test_a_grid_on_two_nodes_logs_through_the_server(ray_grid, ray_cluster, server, cluster_env):
    repo, res = ray_grid
    runs = children(server, "rg")
    (parent,) = [r for r in grid_runs(server, "rg") if r.data.tags.get("grid.parent") == "true"]
    assert sorted((r.data.tags["grid.cell"], r.data.tags["grid.seed"]) for r in runs) == \
        sorted((c, s) for c in CELLS for s in ("0", "1"))
    assert parent.info.status == "FINISHED" and parent.data.tags["grid.failed_runs"] == "0"
    nodes = {n.node_id[:8] for n in [ray_cluster.head_node, *ray_cluster.worker_nodes]}
    for r in runs:
        assert r.info.status == "FINISHED" and "fid" in r.data.metrics
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert r.data.tags["grid.runner"] == "ray" and r.data.params["train.threads"] == "1"
        # artifacts went over HTTP to the server's store, not to a folder of the node
        assert r.info.artifact_uri.startswith("mlflow-artifacts:")
        assert {"samples", "model", "evaluate"} <= {a.path for a in mlflow.MlflowClient(server).list_artifacts(r.info.run_id)}
    # both nodes trained
    assert {r.data.tags["grid.node"].split("/")[1] for r in runs} == nodes
    # the same data and evaluator everywhere: the object store's copies checked by their checksums
    assert len({r.data.tags["data.sha256"] for r in runs}) == 1
    assert len({r.data.tags["evaluator.sha256"] for r in runs}) == 1
    # each run's record, and its images beside it, came back to the driver's results/
    from pipeline.records import image_path, read_records

    found = read_records(repo / "results/rg")
    records = {rec["run_id"]: rec for _, rec in found}
    assert set(records) == {r.info.run_id for r in runs}
    for r in runs:
        assert records[r.info.run_id]["metrics"] == r.data.metrics
    assert all(image_path(path, name).exists() for path, _ in found for name in ("grid.png", "attention.png"))
    # finished runs leave no folder on their node
    assert not [p for p in Path(cluster_env["SAGAN_GRID_WORKDIR"]).rglob("params.yaml")]
    text = (repo / "reports/rg/ablation.md").read_text()
    assert "±" in text and "p-value" in text
    assert re.search(r"\*\*(better: \w+|equivalent|inconclusive)\*\*", text)
    images = [line.split("(")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert images and all((repo / "reports/rg" / i).exists() for i in images)


def test_the_local_runner_runs_the_same_grid_without_dvc_or_ray(ray_grid, server):
    """`--runner local` in the same project, on its own SQLite store: each cell x seed a process in
    .grid/<grid>/, the same tagged runs as on Ray (the same metrics to the last bit, the same params and
    tag keys), train.device carried to every run, records, a report of its own under reports/<grid>/, a
    second invocation that finds everything done, and a second sampling seed for each generator."""
    from pipeline.evaluator import weights_sha256
    from pipeline.records import read_records

    repo, _ = ray_grid
    cmd = [sys.executable, "-m", "pipeline.grid", "run", "--runner", "local", "--device", "cpu", "--name", "loc",
           "--steps", "4", "--n-samples", "100", "--seeds", "0", "--jobs", "2"]
    run(cmd, repo, timeout=900)  # env(): no MLFLOW_TRACKING_URI, the project's own store
    store = f"sqlite:///{repo / 'mlflow.db'}"
    client = mlflow.MlflowClient(store)
    found = grid_runs(store, "loc")
    (parent,) = [r for r in found if r.data.tags.get("grid.parent") == "true"]
    runs = [r for r in found if r is not parent]
    assert sorted(r.info.run_name for r in runs) == ["loc-post-bce-s0", "loc-post-hinge-s0"]
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    evaluator_sha = weights_sha256(repo / "models/evaluator.pt")
    for r in runs:
        assert r.info.status == "FINISHED" and "fid" in r.data.metrics
        assert r.data.params["train.device"] == "cpu" and r.data.params["train.steps"] == "4"
        assert r.data.tags["evaluator.sha256"] == evaluator_sha
        assert r.data.tags["machine.cpu"] and r.data.tags["machine.gpu"] == "none"
        assert r.data.tags["grid.runner"] == "local"
        # artifacts live beside the store, not in the run's folder
        assert r.info.artifact_uri.startswith((repo / "mlruns").as_uri())
    # the same cells and seed on Ray (the module's grid, on the server): the same runs
    on_ray = {r.data.tags["grid.cell"]: r for r in children(server, "rg") if r.data.tags["grid.seed"] == "0"}
    for r in runs:
        twin = on_ray[r.data.tags["grid.cell"]]
        for metric in ("fid", "classifier_score", "precision", "recall", "density", "coverage"):
            assert r.data.metrics[metric] == twin.data.metrics[metric], (r.info.run_name, metric)
        # the same params but the grid's own: its name and its ablation block (each run carries its grid's)
        def own(params):
            return {k: v for k, v in params.items() if k != "mlflow.grid" and not k.startswith("ablation.")}
        assert own(r.data.params) == own(twin.data.params)
        assert (r.data.params["ablation.name"], twin.data.params["ablation.name"]) == ("loc", "rg")
        assert set(r.data.tags) == set(twin.data.tags)
    # each run's record, in git's tree: what outlives this store
    records = {rec["run_id"]: rec for _, rec in read_records(repo / "results/loc")}
    assert set(records) == {r.info.run_id for r in runs}
    for r in runs:
        rec = records[r.info.run_id]
        assert rec["metrics"] == r.data.metrics and rec["params"] == r.data.params and rec["missing"] == []
        assert rec["run_name"] == r.info.run_name and rec["cell"] == r.data.tags["grid.cell"]
    assert (repo / ".grid/loc/post-hinge-s0/run.log").exists()
    assert (repo / "reports/loc/ablation.md").exists() and not (repo / "reports/ablation.md").exists()
    again = run(cmd + ["--no-report"], repo, timeout=300)
    assert "2 finished, 0 to run" in again.stderr
    # a second sampling seed for each finished generator: its metrics beside the first draw's, in the store
    # and the record, and in the report's variance section; a second call has nothing left to do
    res = run([sys.executable, "-m", "pipeline.resample", "--grid", "loc"], repo, timeout=300)
    assert "2 run(s) of grid 'loc' resampled" in res.stdout
    for r in runs:
        after = client.get_run(r.info.run_id)
        assert after.info.status == "FINISHED" and after.data.tags["resample.sample_seed"] == "1235"
        assert after.data.metrics["resample.fid"] != after.data.metrics["fid"] > 0
        records = {rec["run_id"]: rec for _, rec in read_records(repo / "results/loc")}
        assert records[r.info.run_id]["metrics"] == after.data.metrics
    assert "0 run(s)" in run([sys.executable, "-m", "pipeline.resample", "--grid", "loc"], repo).stdout
    # each record's images beside it are its own run's (its folder's samples/), not the project's
    from pipeline.records import image_path

    for path, rec in read_records(repo / "results/loc"):
        folder = repo / ".grid/loc" / rec["run_name"].removeprefix("loc-")
        assert image_path(path, "grid.png").read_bytes() == (folder / "samples/grid.png").read_bytes()
    run([sys.executable, "-m", "pipeline.report", "--grid", "loc"], repo)
    variance = (repo / "reports/loc/ablation.md").read_text().split("## Which variance is it?")[1]
    assert "| fid | 2 |" in variance


def test_a_local_store_is_refused_on_a_multi_node_cluster(ray_grid, ray_cluster, cluster_env, tmp_path):
    repo, _ = ray_grid
    e = dict(cluster_env)
    e["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = run(grid_cmd("refused", address=ray_cluster.address), repo, env=e, check=False, timeout=300)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "2 nodes" in res.stderr and "mlflow server" in res.stderr and "MLFLOW_TRACKING_URI" in res.stderr
    assert grid_runs(e["MLFLOW_TRACKING_URI"], "refused") == []  # not even the grid's parent run


def test_a_cell_that_fails_by_itself_fails_once(ray_cluster, cluster_env, server, tmp_path, prepared):
    """A value only training finds bad (γ so large the generator's images overflow): one FAILED run, no
    retry, the other cell finishes, the grid exits non-zero naming the cell."""
    axes = {"attention.position": ["post"], "loss.type": ["hinge"], "attention.gamma_init": [0.0, 1.0e+38]}
    repo = make_repo(tmp_path / "repo", {"ablation": {"axes": axes}}, template=prepared)
    res = run(grid_cmd("bad", seeds=("0",), address=ray_cluster.address) + ["--no-report"], repo, env=cluster_env,
              check=False, timeout=600)
    assert res.returncode == 1, res.stderr[-3000:]
    bad = "attention.position=post,loss.type=hinge,attention.gamma_init=1e+38"
    assert f"1 run(s) failed: {bad} seed 0" in res.stderr
    assert "not finite" in res.stderr  # the failed run's log, shown by the driver
    runs = children(server, "bad")
    by_cell = {}
    for r in runs:
        by_cell.setdefault(r.data.tags["grid.cell"], []).append(r.info.status)
    assert by_cell == {"attention.position=post,loss.type=hinge,attention.gamma_init=0.0": ["FINISHED"], bad: ["FAILED"]}


def evaluated(runs: list) -> list:
    return [r for r in runs if r.info.status == "FINISHED" and "fid" in r.data.metrics]


def _wait_for(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_killed_driver_then_the_same_command_runs_only_the_missing_cells(ray_grid, ray_cluster, cluster_env, server):
    """The grid grows by a seed; its driver is killed as soon as the new seed's two runs have started.
    The same command again skips every finished run and runs only the missing ones; no attempt is left
    RUNNING."""
    repo, _ = ray_grid
    cmd = grid_cmd("rg", seeds=("0", "1", "2"), address=ray_cluster.address) + ["--no-report"]
    driver = subprocess.Popen(cmd, cwd=repo, env=cluster_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        _wait_for(lambda: len([r for r in children(server, "rg") if r.data.tags["grid.seed"] == "2"]) == 2
                  or driver.poll() is not None, 300, "the new seed's runs")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    done = len(evaluated(children(server, "rg")))
    assert 4 <= done < 6, "the driver finished before it could be killed"
    res = run(cmd, repo, env=cluster_env, timeout=600)
    assert f"{done} finished, {6 - done} to run" in res.stderr, res.stderr[-2000:]
    runs = children(server, "rg")
    finished = [(r.data.tags["grid.cell"], r.data.tags["grid.seed"]) for r in evaluated(runs)]
    assert sorted(finished) == sorted((c, s) for c in CELLS for s in ("0", "1", "2"))
    killed = [r for r in runs if r.info.status == "KILLED"]
    # (an attempt that reached a checkpoint resumes on its node, in the same run: none left behind then)
    assert {r.data.tags["grid.seed"] for r in killed} <= {"2"} and all("grid.lost" in r.data.tags for r in killed)
    assert all(r.info.status in ("FINISHED", "KILLED") for r in runs)
    assert len(runs) == len(finished) + len(killed)


def test_a_node_lost_mid_training_reruns_its_cell_on_another_node(ray_grid, ray_cluster, cluster_env, server):
    """The worker node is removed while it trains a cell: the cell runs again on another node, the grid
    ends with one FINISHED run per cell, the lost attempt is KILLED (not left RUNNING) and its training
    process did not outlive its node."""
    repo, _ = ray_grid
    (worker,) = ray_cluster.worker_nodes
    lost_id = worker.node_id[:8]
    # 30 steps: long enough a training that the node goes while it runs (the other grids' 4 steps take ~2 s)
    cmd = grid_cmd("lost", seeds=("0",), address=ray_cluster.address) + ["--no-report", "--steps", "30"]
    driver = subprocess.Popen(cmd, cwd=repo, env=cluster_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    try:
        # the worker's run has started
        def training_on_worker():
            return [r for r in children(server, "lost") if r.info.status == "RUNNING"
                    and r.data.tags.get("grid.node", "").endswith(lost_id)]

        (lost_run,) = _wait_for(training_on_worker, 300, "a run training on the worker node")
        folder = Path(cluster_env["SAGAN_GRID_WORKDIR"]) / worker.node_id[:12]
        training = [p for p in psutil.process_iter(["cwd", "cmdline"])
                    if p.info["cwd"] and str(folder) in p.info["cwd"] and "cell" in (p.info["cmdline"] or [])]
        assert training, "the cell's process on the worker node"
        ray_cluster.remove_node(worker, allow_graceful=False)
        ray_cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")  # another node to run it again
        gone, alive = psutil.wait_procs(training, timeout=15)
        assert not alive, "training outlived its node"
        out, _ = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 0, out[-3000:]
    runs = children(server, "lost")
    statuses = {}
    for r in runs:
        statuses.setdefault(r.data.tags["grid.cell"], []).append(r.info.status)
    assert sorted(s.count("FINISHED") for s in statuses.values()) == [1, 1], statuses
    lost = mlflow.MlflowClient(server).get_run(lost_run.info.run_id)
    assert lost.info.status == "KILLED" and "grid.lost" in lost.data.tags
    (redo,) = [r for r in runs if r.data.tags["grid.cell"] == lost.data.tags["grid.cell"] and r.info.status == "FINISHED"]
    assert not redo.data.tags["grid.node"].endswith(lost_id)
    assert not [r for r in runs if r.info.status == "RUNNING"]
