"""MLflow: where the store lives, one run per pipeline execution, and the tags every run carries.

The store is `sqlite:///<root>/mlflow.db` with artifacts in `<root>/mlruns`. `root` is DVC_ROOT when
DVC runs the stage (queued and --temp experiments run in a temporary copy that DVC deletes, but DVC_ROOT
still names the real repository) and the git top level otherwise. MLFLOW_TRACKING_URI overrides it.

MLflow traps handled here: several processes creating the database or the same experiment at once can
crash or file runs under "Default", so creation is guarded by a file lock and the experiment id is passed
explicitly; an experiment needs an absolute artifact location or artifacts land in the temporary copy.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock

from pipeline import cpu
from pipeline.config import Params
from pipeline.errors import UserError
from pipeline.fileio import write_json

log = logging.getLogger(__name__)

RUN_FILE = Path("models/run.json")  # the DVC output that lets sample and evaluate add to train's run


def project_root() -> Path:
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True)
        return Path(top.stdout.strip()).resolve()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return Path.cwd().resolve()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def artifact_root(uri: str | None = None) -> str:
    """Artifacts of a local SQLite store live beside its database (<folder>/mlruns), so the store is one
    folder that can be moved or archived whole."""
    uri = uri or tracking_uri()
    if _is_local_sqlite(uri):
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlruns").as_uri()
    return (project_root() / "mlruns").as_uri()


def _is_local_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:///")


def setup(experiment: str) -> str:
    """Points MLflow at the store and returns the experiment id, creating it once under a lock."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    lock_path = project_root() / ".mlflow.lock"
    lock = FileLock(str(lock_path)) if _is_local_sqlite(uri) else contextlib.nullcontext()
    with lock:
        client = mlflow.MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            location = artifact_root(uri) if _is_local_sqlite(uri) else None
            return client.create_experiment(experiment, artifact_location=location)
        if exp.lifecycle_stage == "deleted":
            raise UserError(f"MLflow experiment {experiment!r} is deleted; restore it "
                            f"(`mlflow experiments restore`) or set mlflow.experiment to another name")
        return exp.experiment_id


def git_commit() -> str:
    """HEAD of the project; SAGAN_GIT_COMMIT names it where the code runs from a copy without .git
    (a lent GPU machine gets the working tree only)."""
    if os.environ.get("SAGAN_GIT_COMMIT"):
        return os.environ["SAGAN_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=project_root())
        return out.stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def version_tags() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    tags = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "dvc", "mlflow", "numpy", "scipy", "scikit-learn"):
        try:
            tags[f"version.{pkg}"] = version(pkg)
        except PackageNotFoundError:
            tags[f"version.{pkg}"] = "missing"
    return tags


def machine_tags(device: str = "cpu") -> dict[str, str]:
    """What ran the run: the CPU model and core count, and the GPU's name when training used one."""
    tags = {"machine.cpu": cpu.model(), "machine.cores": str(os.cpu_count() or 0), "machine.gpu": "none",
            "machine.cpu_class": cpu.effective_class()}
    if device.startswith("cuda"):
        import torch

        tags["machine.gpu"] = torch.cuda.get_device_name(torch.device(device))
    return tags


def run_tags(extra: dict[str, Any] | None = None) -> dict[str, str]:
    tags = {
        "dvc.exp_name": os.environ.get("DVC_EXP_NAME", ""),
        "dvc.baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", ""),
        "git.commit": git_commit(),
        **version_tags(),
    }
    tags.update({k: str(v) for k, v in (extra or {}).items()})
    return tags


def finished_grid_runs(experiment: str, grid: str) -> dict[tuple[str, int], Any]:
    """(grid.cell, grid.seed) -> the latest FINISHED and evaluated (has `fid`) MLflow run of `grid`."""
    import mlflow

    exp_id = setup(experiment)
    client = mlflow.MlflowClient(tracking_uri())
    found = client.search_runs([exp_id], f"tags.`grid.name` = '{grid}' and attributes.status = 'FINISHED'",
                               max_results=5000, order_by=["attributes.start_time DESC"])
    runs: dict[tuple[str, int], Any] = {}
    for r in found:
        if "fid" in r.data.metrics:
            runs.setdefault((r.data.tags.get("grid.cell", ""), int(r.data.tags.get("grid.seed", -1))), r)
    return runs


def standard_tags(source_name: str) -> dict[str, str]:
    """The tags MLflow's fluent API sets by itself (the UI shows them as Source, User, Git commit)."""
    import getpass

    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE, MLFLOW_USER

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return {MLFLOW_GIT_COMMIT: git_commit(), MLFLOW_USER: user, MLFLOW_SOURCE_NAME: source_name,
            MLFLOW_SOURCE_TYPE: "LOCAL"}


GRID_PARENT_TAG = "grid.parent"


def grid_parent_run(experiment: str, grid: str, create: bool = False) -> str | None:
    """The run that groups a grid's runs in the MLflow UI (its runs nest under it): found by its tags,
    created by the grid runner before any of its runs start."""
    import mlflow

    exp_id = setup(experiment)
    client = mlflow.MlflowClient(tracking_uri())
    found = client.search_runs([exp_id], filter_string=f"tags.`{GRID_PARENT_TAG}` = 'true' and tags.`grid.name` = '{grid}'",
                               order_by=["attributes.start_time DESC"], max_results=1)
    if found:
        if create:  # the grid runs (again): its parent is running as long as it does
            client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    if not create:
        return None
    run = client.create_run(exp_id, run_name=f"grid {grid}",
                            tags={**run_tags({GRID_PARENT_TAG: "true", "grid.name": grid}),
                                  **standard_tags("pipeline.grid")})
    return run.info.run_id


def start_run(params: Params, run_name: str | None = None, tags: dict[str, Any] | None = None,
              source_name: str = "stages.train") -> str:
    """Creates the pipeline execution's run, logs params and tags, records its id in RUN_FILE."""
    import mlflow
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    exp_id = setup(params.mlflow.experiment)
    client = mlflow.MlflowClient(tracking_uri())
    # DVC names its experiments; the grid's local runner names its runs the same way
    name = run_name or os.environ.get("DVC_EXP_NAME") or os.environ.get("SAGAN_RUN_NAME") or None
    tags = dict(tags or {})
    if params.mlflow.grid:
        tags.update({"grid.name": params.mlflow.grid, "grid.cell": params.grid_cell(),
                     "grid.seed": params.seed})
        parent = grid_parent_run(params.mlflow.experiment, params.mlflow.grid)
        if parent:
            tags[MLFLOW_PARENT_RUN_ID] = parent
    run = client.create_run(exp_id, run_name=name, tags={**run_tags(tags), **standard_tags(source_name)})
    flat = {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in params.flat().items()}
    from mlflow.entities import Param

    items = [Param(k, str(v)) for k, v in flat.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[i:i + 100], synchronous=True)
    write_json(RUN_FILE, {"run_id": run.info.run_id, "experiment_id": exp_id,
                          "tracking_uri": tracking_uri(), "experiment": params.mlflow.experiment})
    return run.info.run_id


def reopen_run(run_id: str, params: Params) -> str:
    """Continues a run after an interruption: same run id, marked running again."""
    import mlflow

    exp_id = setup(params.mlflow.experiment)
    client = mlflow.MlflowClient(tracking_uri())
    client.update_run(run_id, status="RUNNING")
    write_json(RUN_FILE, {"run_id": run_id, "experiment_id": exp_id,
                          "tracking_uri": tracking_uri(), "experiment": params.mlflow.experiment})
    return run_id


def current_run_id(run_file: Path = RUN_FILE) -> str:
    try:
        return json.loads(Path(run_file).read_text())["run_id"]
    except FileNotFoundError:
        raise UserError(f"{run_file} is missing: run the train stage first (`dvc repro train`)")


def log_dataset(run_id: str, x: Any, y: Any, meta: dict[str, Any], context: str = "training") -> None:
    """The prepared data as an MLflow dataset input of the run (the UI's Datasets column): its name
    names the source, its digest is the data's checksum, its profile the shape."""
    import mlflow
    from mlflow.entities import DatasetInput, InputTag

    sha = meta.get("sha256", {}).get("x_train", "")
    ds = mlflow.data.from_numpy(x, targets=y, name=f"mnist-{meta.get('source', 'unknown')}",
                                source=str(project_root() / "data" / "prepared"), digest=sha[:16] or None)
    mlflow.MlflowClient(tracking_uri()).log_inputs(
        run_id, datasets=[DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])])


def log_state_dict(run_id: str, state_dict: dict[str, Any], artifact_path: str) -> None:
    """A state dict in MLflow's format: `mlflow.pytorch.load_state_dict(f"runs:/{run_id}/{artifact_path}",
    weights_only=True)` loads it back."""
    import tempfile

    import mlflow.pytorch

    with tempfile.TemporaryDirectory() as tmp:
        mlflow.pytorch.save_state_dict(state_dict, tmp)
        mlflow.MlflowClient(tracking_uri()).log_artifacts(run_id, tmp, artifact_path)


class RunLogger:
    """Logs to one MLflow run by id. Metrics go through MLflow's asynchronous logging: a call queues
    them and returns at once (a synchronous call costs 10-70 ms against a SQLite store), and MLflow
    batches and sends them from its own thread; `flush` and `close` wait until they are stored."""

    def __init__(self, run_id: str):
        import mlflow

        self.client = mlflow.MlflowClient(tracking_uri())
        self.run_id = run_id
        self._operations: list = []

    def metrics(self, values: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, step or 0) for k, v in values.items()]
        self._operations.append(self.client.log_batch(self.run_id, metrics=batch, synchronous=False))
        if len(self._operations) >= 1000:  # bounded: the oldest are stored long since (else: wait for them)
            older, self._operations = self._operations[:-100], self._operations[-100:]
            for op in older:
                op.wait()

    def flush(self) -> None:
        """Waits until every queued metric is stored; raises what the store answered if one failed."""
        operations, self._operations = self._operations, []
        for op in operations:
            op.wait()

    def artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def artifacts(self, folder: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def tags(self, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def close(self, status: str | None = None) -> None:
        try:
            self.flush()
        finally:
            if status:
                self.client.set_terminated(self.run_id, status)


@contextlib.contextmanager
def run_logger(run_id: str, end_status: str | None = None) -> Iterator[RunLogger]:
    """Log to an existing run; on error the run is marked FAILED."""
    logger = RunLogger(run_id)
    try:
        yield logger
    except BaseException:
        logger.close("FAILED")
        raise
    else:
        logger.close(end_status)
