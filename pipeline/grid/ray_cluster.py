"""The Ray runner: each cell x seed one Ray task, on this machine or on a Ray cluster of many.

    python -m pipeline.grid run --runner ray                       # a Ray instance sized to this machine
    python -m pipeline.grid run --runner ray --address HEAD:6379   # a running cluster (`ray start`)

A task runs the same cell process as the local runner (pipeline.grid.cell: train -> sample -> evaluate)
in a folder on its node, with `num_cpus` = the run's threads and, on GPUs, a share of one GPU sized by
memory (pipeline.grid.gpu). Nothing needs a shared disk: the prepared data and the evaluator travel
once through Ray's object store, checked against the driver's sha256 on arrival; the runs log to the
tracking server of MLFLOW_TRACKING_URI (artifacts through it: `mlflow server --artifacts-destination`);
each run's record and its images come back with the task's result and are written to the driver's
results/<grid>/.
A task whose node dies is run again elsewhere (Ray's `max_retries`); a cell that fails by itself
(a non-zero exit) is not. Every node needs the project installed (`pip install .[ray]`).
"""
from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline import tracking
from pipeline.config import Params
from pipeline.errors import UserError
from pipeline.grid.cell import PARENT_PID_ENV, ensure_shared_outputs, params_text, shared_files, thread_env
from pipeline.grid.gpu import gpu_share
from pipeline.grid.spec import Cell, GridSpec
from pipeline.records.format import RESULTS_DIR

log = logging.getLogger("grid")

WORKDIR_ENV = "SAGAN_GRID_WORKDIR"  # where tasks keep their run folders on each node (default: the temp dir)
MAX_RETRIES = 3  # attempts after a node or worker is lost (not after a cell's own failure)
LOG_TAIL_CHARS = 4000
# the driver's settings that each run needs (the tracking server, its credentials, the fault tests' grace)
FORWARDED_ENV_PREFIXES = ("MLFLOW_", "SAGAN_MLFLOW_")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack_shared(root: Path) -> dict[str, bytes]:
    """The shared stages' outputs (prepared data, evaluator) as {relative path: bytes}, for the object store."""
    return {str(rel): (root / rel).read_bytes() for rel in shared_files(root)}


def unpack_shared(shared: dict[str, bytes], checksums: dict[str, str], folder: Path) -> None:
    """Writes the shared files into a run's folder (kept where already there and intact) and checks each
    against the driver's checksum: a run never trains or judges with other data than the grid's."""
    for rel, data in shared.items():
        path = folder / rel
        if not (path.exists() and sha256_bytes(path.read_bytes()) == checksums[rel]):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        if sha256_bytes(path.read_bytes()) != checksums[rel]:
            raise UserError(f"{rel} on node {socket.gethostname()} does not match the driver's "
                            f"(sha256 {checksums[rel][:12]}): the object store delivered other bytes")


def run_folder(workdir: str | None, node_id: str, grid: str, exp_name: str) -> Path:
    """A run's folder on its node: stable for one node and cell, so a retry there resumes from the
    checkpoint (another node starts afresh)."""
    base = Path(workdir or os.environ.get(WORKDIR_ENV) or Path(tempfile.gettempdir()) / f"sagan-grid-{getpass.getuser()}")
    return base / node_id[:12] / grid / exp_name


def cell_task(grid: str, exp_name: str, params: str, shared: dict[str, bytes], checksums: dict[str, str],
              env: dict[str, str], workdir: str | None) -> dict:
    """One cell x seed on whichever node Ray chose: the run's folder, its inputs, then the cell process.
    Returns the exit code, the run's record(s) as text and their images as bytes, the node, and the log's
    tail when it failed."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    folder = run_folder(workdir, node_id, grid, exp_name)
    folder.mkdir(parents=True, exist_ok=True)
    for entry in folder.iterdir():  # an earlier attempt's outputs go; its checkpoint stays
        if entry.name != "checkpoints":
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    unpack_shared(shared, checksums, folder)
    (folder / "params.yaml").write_text(params)
    node = f"{socket.gethostname()}/{node_id[:8]}"
    run_env = {**os.environ, **env, "DVC_ROOT": str(folder), PARENT_PID_ENV: str(os.getpid()),
               tracking.RUN_TAGS_ENV: json.dumps({"grid.runner": "ray", "grid.node": node})}
    t0 = time.perf_counter()
    with open(folder / "run.log", "w") as out:
        rc = subprocess.run([sys.executable, "-m", "pipeline.grid", "cell"], cwd=folder, stdout=out,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=run_env).returncode
    records = {str(f.relative_to(folder / RESULTS_DIR)): f.read_text()
               for f in sorted((folder / RESULTS_DIR).rglob("*.json"))}
    images = {str(f.relative_to(folder / RESULTS_DIR)): f.read_bytes()
              for f in sorted((folder / RESULTS_DIR).rglob("*.png"))}
    result = {"rc": rc, "records": records, "images": images, "node": node, "folder": str(folder),
              "seconds": time.perf_counter() - t0}
    if rc == 0:
        shutil.rmtree(folder, ignore_errors=True)  # the run is in MLflow and its record on the driver
    else:
        result["log_tail"] = (folder / "run.log").read_text(errors="replace")[-LOG_TAIL_CHARS:]
    return result


def is_local_store(uri: str) -> bool:
    """A store only this machine's processes can write: SQLite or a folder (not a tracking server)."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def connect(address: str | None, num_cpus: int):
    """Joins the cluster at `address` (or RAY_ADDRESS), else starts a Ray instance sized to this machine
    on 127.0.0.1, without the dashboard or usage statistics."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    common = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                  configure_logging=False)
    if address or os.environ.get("RAY_ADDRESS"):
        info = ray.init(address=address, **common)
    else:
        # Ray starts its workers at niceness 15: the grid's training would then yield to anything else on the
        # machine (on two busy cores a cell got ~3% of a core). The grid is the job: workers run at 0.
        system = {"worker_niceness": 0, **json.loads(os.environ.get("SAGAN_RAY_SYSTEM_CONFIG") or "{}")}
        info = ray.init(num_cpus=num_cpus, _node_ip_address="127.0.0.1", object_store_memory=512 * 2**20,
                        _system_config=system, **common)
    return info


def alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def check_store_reachable_from(nodes: list[dict], uri: str) -> None:
    """Refuses a store that tasks on other nodes could not write."""
    if len(nodes) > 1 and is_local_store(uri):
        raise UserError(
            f"the Ray cluster has {len(nodes)} nodes but the MLflow store is {uri}, a local file the other "
            f"nodes cannot write. Start a tracking server that proxies artifacts, reachable from every node:\n"
            f"  mlflow server --backend-store-uri sqlite:///mlflow.db --artifacts-destination ./mlartifacts "
            f"--host 0.0.0.0 --port 5000\n"
            f"then run the grid with MLFLOW_TRACKING_URI=http://<this host>:5000 (docs/scale.md)")


def gpu_request(p: Params, spec: GridSpec, cluster_gpus: float) -> float:
    """num_gpus for each task: none on CPU runs or a cluster without GPUs; else a memory-sized share of
    one GPU, from this machine's GPU when it has one (SAGAN_GPU_SHARE overrides)."""
    device = spec.device or p.train.device
    if device == "cpu" or cluster_gpus <= 0:
        return 0.0
    if os.environ.get("SAGAN_GPU_SHARE"):
        return float(os.environ["SAGAN_GPU_SHARE"])
    import torch

    if torch.cuda.is_available():
        return gpu_share(torch.cuda.get_device_properties(0).total_memory)
    log.warning("this machine has no GPU to size the cluster's by: one run per GPU (set SAGAN_GPU_SHARE=0.1 "
                "for ten runs per GPU)")
    return 1.0


def preflight(p: Params, spec: GridSpec, threads: int, address: str | None = None, **_options) -> None:
    """Before the grid's parent run exists: joins (or starts) Ray and refuses what the cluster cannot do
    (a local store on many nodes, runs larger than the cluster). The connection stays for `run`."""
    import ray

    t0 = time.perf_counter()
    connect(address, num_cpus=os.cpu_count() or 1)
    try:
        nodes = alive_nodes()
        resources = ray.cluster_resources()
        log.info("Ray: %d node(s), %g CPU(s), %g GPU(s), connected in %.1f s", len(nodes),
                 resources.get("CPU", 0), resources.get("GPU", 0), time.perf_counter() - t0)
        check_store_reachable_from(nodes, tracking.tracking_uri())
        if threads > resources.get("CPU", 0):
            raise UserError(f"each run asks for {threads} CPU(s) but the cluster has {resources.get('CPU', 0):g}: "
                            f"lower train.threads or raise --jobs")
    except BaseException:
        ray.shutdown()
        raise


def run(p: Params, spec: GridSpec, todo: list[Cell], threads: int, address: str | None = None,
        max_retries: int = MAX_RETRIES, **_options) -> list[Cell]:
    """Runs the cells as Ray tasks and waits for them; writes each finished run's record to results/."""
    import ray
    from tqdm import tqdm

    root = Path.cwd().resolve()
    ensure_shared_outputs(root)
    uri = tracking.tracking_uri()
    if not ray.is_initialized():
        preflight(p, spec, threads, address)
    try:
        gpus = gpu_request(p, spec, ray.cluster_resources().get("GPU", 0))
        shared = pack_shared(root)
        checksums = {rel: sha256_bytes(data) for rel, data in shared.items()}
        shared_ref = ray.put(shared)
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}
        env.update(thread_env(threads), MLFLOW_TRACKING_URI=uri, SAGAN_GIT_COMMIT=tracking.git_commit())
        task = ray.remote(cell_task)
        workdir = os.environ.get(WORKDIR_ENV)
        pending = {task.options(name=spec.run_name(c), num_cpus=threads, num_gpus=gpus, max_retries=max_retries,
                                retry_exceptions=False).remote(
            spec.name, c.exp_name, params_text(p, spec, c, threads), shared_ref, checksums,
            {**env, "SAGAN_RUN_NAME": spec.run_name(c)}, workdir): c for c in todo}
        log.info("%d task(s) submitted: %d CPU%s each%s", len(pending), threads, "s" if threads > 1 else "",
                 f", {gpus:.3g} GPU each" if gpus else "")
        failed: list[Cell] = []
        with tqdm(total=len(todo), desc=f"grid {spec.name}", unit="run") as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                cell = pending.pop(done[0])
                bar.update(1)
                if not _collect(done[0], cell, root):
                    failed.append(cell)
        return failed
    finally:
        ray.shutdown()


def _collect(ref, cell: Cell, root: Path) -> bool:
    """A task's outcome: its records and their images written to results/, a failure reported with its log.
    True if it ran."""
    import ray

    try:
        result = ray.get(ref)
    except ray.exceptions.RayError as e:  # lost more often than max_retries, or the task itself raised
        log.error("cell %s seed %d failed on the cluster: %s", cell.label, cell.seed, str(e).strip().splitlines()[-1])
        return False
    files = {**{rel: text.encode() for rel, text in result["records"].items()}, **result.get("images", {})}
    for rel, data in files.items():
        path = root / RESULTS_DIR / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    if result["rc"] == 0:
        log.info("cell %s seed %d done in %.0f s on %s", cell.label, cell.seed, result["seconds"], result["node"])
        return True
    log.error("cell %s seed %d failed (exit %d) on %s; its log (%s/run.log) ends:\n%s", cell.label, cell.seed,
              result["rc"], result["node"], result["folder"], result["log_tail"])
    return False
