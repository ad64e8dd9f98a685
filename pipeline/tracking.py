"""MLflow runs: one run per pipeline execution, the tags every run carries, and the logger that sends a
run's values without making training wait (the store itself: pipeline/store.py)."""
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

from pipeline import cpu
from pipeline.config import Params
from pipeline.errors import UserError
from pipeline.fileio import write_json
from pipeline.store import check_reachable, project_root, setup, tracking_uri, ui_url  # noqa: F401 - tracking.X callers

log = logging.getLogger(__name__)

RUN_FILE = Path("models/run.json")
# JSON object of tags a grid runner adds to each run it starts (which runner, which node)
RUN_TAGS_ENV = "SAGAN_RUN_TAGS"  # the DVC output that lets sample and evaluate add to train's run


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
            "machine.cpu_class": cpu.effective_class(), "machine.cpu_uarch": cpu.microarchitecture()}
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


def grid_parent(experiment: str, grid: str) -> str | None:
    """The id of the run a grid's runs nest under in the MLflow UI (made by the grid runner,
    pipeline.grid_runs.grid_parent_run), or None."""
    import mlflow

    exp_id = setup(experiment)
    found = mlflow.MlflowClient(tracking_uri()).search_runs(
        [exp_id], filter_string=f"tags.`{GRID_PARENT_TAG}` = 'true' and tags.`grid.name` = '{grid}'",
        order_by=["attributes.start_time DESC"], max_results=1)
    return found[0].info.run_id if found else None


# keys that do not change what a run is (where and how fast it ran, what it is called): left out of its name
_NAME_IGNORES = ("seed", "mlflow.", "ablation.", "train.threads", "train.device", "train.compile",
                 "train.attention_kernel", "train.log_every", "train.checkpoint_every", "train.snapshot_every")
NAME_MAX_DIFFS = 3


def default_run_name(params: Params) -> str:
    """What a run is, for a `dvc repro` that DVC does not name: the grid cell's values and the seed
    (`post-hinge-s0`), then the other params that differ from the shipped defaults (`train.steps=6`, at
    most NAME_MAX_DIFFS, then `+N more`). A grid's runs and `dvc exp run`s are named by the grid and DVC."""
    import re

    from pipeline.config import Params as Defaults

    flat, shipped = params.flat(), Defaults().flat()
    cell = "-".join(str(flat[axis]) for axis in params.ablation.axes)
    name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", f"{cell}-s{params.seed}")
    diffs = [f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}" for k, v in flat.items()
             if k not in params.ablation.axes and not k.startswith(_NAME_IGNORES) and v != shipped.get(k)]
    if diffs:
        shown = diffs[:NAME_MAX_DIFFS] + ([f"+{len(diffs) - NAME_MAX_DIFFS} more"] if len(diffs) > NAME_MAX_DIFFS else [])
        name += " " + " ".join(shown)
    return name


def start_run(params: Params, run_name: str | None = None, tags: dict[str, Any] | None = None,
              source_name: str = "stages.train") -> str:
    """Creates the pipeline execution's run, logs params and tags, records its id in RUN_FILE."""
    import mlflow
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    exp_id = setup(params.mlflow.experiment)
    client = mlflow.MlflowClient(tracking_uri())
    # DVC names its experiments; the grid's local runner names its runs the same way
    name = run_name or os.environ.get("DVC_EXP_NAME") or os.environ.get("SAGAN_RUN_NAME") or default_run_name(params)
    tags = {**json.loads(os.environ.get(RUN_TAGS_ENV) or "{}"), **(tags or {})}
    if params.mlflow.grid:
        tags.update({"grid.name": params.mlflow.grid, "grid.cell": params.grid_cell(),
                     "grid.seed": params.seed})
        parent = grid_parent(params.mlflow.experiment, params.mlflow.grid)
        if parent:
            tags[MLFLOW_PARENT_RUN_ID] = parent
    all_tags = {**run_tags(tags), **standard_tags(source_name)}
    run = client.create_run(exp_id, run_name=name, tags=all_tags)
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in param_strings(params).items()]
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[i:i + 100], synchronous=True)
    journal = new_journal(run.info.run_name, run.info.start_time, {**all_tags, "mlflow.runName": run.info.run_name})
    write_json(RUN_FILE, {"run_id": run.info.run_id, "experiment_id": exp_id, "tracking_uri": tracking_uri(),
                          "experiment": params.mlflow.experiment, "journal": journal})
    return run.info.run_id


def param_strings(params: Params) -> dict[str, str]:
    """The run's params as MLflow stores them: text, lists and mappings as JSON."""
    return {k: str(json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in params.flat().items()}


# ---------------------------------------------------------------- the run's own account of what it logged
# Every value a RunLogger sends also goes into the run's journal: its tags, each metric's latest value, and
# the curves a record keeps. train keeps it with its checkpoints and writes it into RUN_FILE; evaluate adds
# its own and writes the run's record from it (pipeline.records.export.record_of_journal): the record is
# the run's, never read back from the store.
CURVES = ("fid_quick", "gamma.", "full.")


def new_journal(run_name: str, start_ms: int, tags: dict[str, str]) -> dict[str, Any]:
    return {"run_name": run_name, "start_ms": start_ms, "tags": dict(tags), "metrics": {}, "curves": {}}


def read_journal(run_id: str, run_file: Path = RUN_FILE) -> dict[str, Any] | None:
    """The journal that train wrote into RUN_FILE for run `run_id` (None: none, or another run's)."""
    try:
        data = json.loads(Path(run_file).read_text())
    except (OSError, ValueError):
        return None
    return data.get("journal") if data.get("run_id") == run_id else None


def save_journal(run_id: str, journal: dict[str, Any], run_file: Path = RUN_FILE) -> None:
    """Writes `journal` into RUN_FILE beside the run's id (train's last act: its DVC output then holds it)."""
    data = json.loads(Path(run_file).read_text())
    if data.get("run_id") != run_id:
        raise UserError(f"{run_file} names run {data.get('run_id')}, not {run_id}: rerun the train stage")
    write_json(run_file, {**data, "journal": journal})


def journal_metrics(journal: dict[str, Any], values: dict[str, float], step: int) -> None:
    """Each value as the metric's latest (MLflow's: the highest step, the last logged on a tie), and on its
    curve where it has one."""
    for k, v in values.items():
        v = float(v)
        last = journal["metrics"].get(k)
        if last is None or step >= last[0]:
            journal["metrics"][k] = [step, v]
        if k.startswith(CURVES):
            journal["curves"].setdefault(k, []).append([step, v])


def reopen_run(run_id: str, params: Params) -> str:
    """Continues a run after an interruption: same run id, marked running again."""
    import mlflow

    exp_id = setup(params.mlflow.experiment)
    client = mlflow.MlflowClient(tracking_uri())
    client.update_run(run_id, status="RUNNING")
    write_json(RUN_FILE, {"run_id": run_id, "experiment_id": exp_id, "tracking_uri": tracking_uri(),
                          "experiment": params.mlflow.experiment, "journal": read_journal(run_id)})
    return run_id


def current_run_id(run_file: Path = RUN_FILE) -> str:
    try:
        return json.loads(Path(run_file).read_text())["run_id"]
    except FileNotFoundError:
        raise UserError(f"{run_file} is missing: run the train stage first (`dvc repro train`)")


def logged_model_id(run_id: str, name: str, client=None) -> str | None:
    """The id of the run's logged model `name` (None when the run has none)."""
    import mlflow

    client = client or mlflow.MlflowClient(tracking_uri())
    run = client.get_run(run_id)
    for output in (run.outputs.model_outputs if run.outputs else []):
        if client.get_logged_model(output.model_id).name == name:
            return output.model_id
    return None


def log_dataset(run_id: str, x: Any, y: Any, meta: dict[str, Any], context: str = "training") -> None:
    """The prepared data as an MLflow dataset input of the run (the UI's Datasets column): its name
    names the source, its digest is the data's checksum, its profile the shape."""
    import mlflow
    from mlflow.entities import Dataset, DatasetInput, InputTag

    sha = meta.get("sha256", {}).get("x_train", "")
    ds = mlflow.data.from_numpy(x, targets=y, name=f"mnist-{meta.get('source', 'unknown')}",
                                source=str(project_root() / "data" / "prepared"), digest=sha[:16] or None)
    entity = Dataset(**ds.to_dict())  # the public dict of the dataset, as the client's log_inputs takes it
    try:
        mlflow.MlflowClient(tracking_uri()).log_inputs(
            run_id, datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])])
    except Exception as e:  # noqa: BLE001 - a server that went away: the input waits with the run's other values
        kept = {"context": context, **{k: getattr(entity, k) for k in DATASET_FIELDS}}
        path = save_pending(run_id, [], [], {}, None, inputs=[kept])
        log.warning("MLflow server %s unreachable (%s): the dataset input is kept in %s", tracking_uri(),
                    str(e).splitlines()[0][:200], path)


DATASET_FIELDS = ("name", "digest", "source_type", "source", "schema", "profile")  # mlflow.entities.Dataset


PENDING_DIR = "mlflow-pending"  # under the project root: what could not reach the tracking server


class RunLogger:
    """Logs to one MLflow run by id. Metrics are gathered into batches (up to 1,000 values, or 5 s) and
    each batch goes through MLflow's asynchronous logging: the training loop never waits on the store
    (a synchronous call costs 10-70 ms against SQLite; one asynchronous call per step cost 4.3 ms, one
    per batch ~0.01 ms a step).

    A tracking server that goes away does not stop the work: batches it refused are kept (up to
    MAX_KEPT values) and sent again with the next batch; what is still unsent when the run ends, with
    the artifacts and the run's final status, goes to <root>/mlflow-pending/<run id>.json, and
    `python -m pipeline.tracking sync` sends it once the server is back."""

    BATCH = 1000
    SECONDS = 5.0
    MAX_KEPT = 2_000_000
    # at the end of a run, how long to wait for a server that went away (being restarted, say);
    # $SAGAN_MLFLOW_GRACE_S changes it (the fault tests shorten it where no restart is coming)
    GRACE_S = float(os.environ.get("SAGAN_MLFLOW_GRACE_S", "30"))

    def __init__(self, run_id: str, journal: dict[str, Any] | None = None):
        import mlflow

        self.client = mlflow.MlflowClient(tracking_uri())
        self.run_id = run_id
        # what this logger sends, kept (see new_journal): train's, restored from its checkpoint on a resume
        self.journal = journal if journal is not None else new_journal("", 0, {})
        self._buf: list = []
        self._sent_at = time.monotonic()
        self._operations: list = []          # (async operation, its batch)
        self._unsent: list = []              # metrics the server refused, oldest first
        self._artifacts: list[tuple[str, str | None]] = []
        self._tags: dict[str, str] = {}
        self.offline = False
        self._probed_at = 0.0
        if (project_root() / PENDING_DIR / f"{run_id}.json").exists():
            # an earlier stage of this run could not reach the server: send what it kept, now that it answers
            with contextlib.suppress(Exception):
                sync_pending(only=run_id)

    def metrics(self, values: dict[str, float], step: int | None = None, model_id: str | None = None) -> None:
        """`model_id`: a logged model the values describe (its page in the UI shows them)."""
        from mlflow.entities import Metric

        journal_metrics(self.journal, values, step or 0)
        ts = int(time.time() * 1000)
        self._buf.extend(Metric(k, float(v), ts, step or 0, model_id=model_id) for k, v in values.items())
        if len(self._buf) >= self.BATCH or time.monotonic() - self._sent_at >= self.SECONDS:
            self._send()

    def _send(self) -> None:
        self._collect(wait=False)
        batch, self._buf = self._buf, []
        self._sent_at = time.monotonic()
        if self.offline and not self._server_back():
            self._keep(batch)  # for later, bounded
            return
        batch, self._unsent = self._unsent + batch, []
        for i in range(0, len(batch), self.BATCH):
            part = batch[i:i + self.BATCH]
            self._operations.append((self.client.log_batch(self.run_id, metrics=part, synchronous=False), part))
        if len(self._operations) >= 100:
            self._collect(wait=True, keep_last=10)

    def _collect(self, wait: bool, keep_last: int = 0) -> None:
        """Checks finished operations (all but the last `keep_last` when waiting); refused batches are kept."""
        pending = []
        for i, (op, part) in enumerate(self._operations):
            futures = getattr(op, "_operation_futures", [])
            done = all(f.done() for f in futures)
            if not done and not (wait and i < len(self._operations) - keep_last):
                pending.append((op, part))
                continue
            try:
                op.wait()
            except Exception as e:  # noqa: BLE001 - the server went away: keep the values, go on
                if not self.offline:
                    log.warning("MLflow server %s unreachable (%s): training goes on; metrics are kept and "
                                "sent when it is back", tracking_uri(), str(e).splitlines()[0][:200])
                self.offline = True
                self._keep(part)
        self._operations = pending

    def _keep(self, part: list) -> None:
        self._unsent.extend(part)
        if len(self._unsent) > self.MAX_KEPT:
            dropped = len(self._unsent) - self.MAX_KEPT
            self._unsent = self._unsent[dropped:]
            log.warning("dropped the %d oldest metric values kept for MLflow (limit %d)", dropped, self.MAX_KEPT)

    def _server_back(self, force: bool = False) -> bool:
        """Whether the server answers again (asked at most every 30 s while training goes on)."""
        if not force and time.monotonic() - self._probed_at < 30:
            return False
        self._probed_at = time.monotonic()
        try:
            check_reachable(2.0)
        except UserError:
            return False
        log.info("MLflow server %s is back: sending %d kept metric values", tracking_uri(), len(self._unsent))
        self.offline = False
        return True

    def flush(self) -> None:
        """Sends everything and waits until it is stored (or kept, if the server is away)."""
        self._send()
        self._collect(wait=True)

    def artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self._artifacts.append((str(Path(path).resolve()), artifact_path))
        if not self.offline:
            try:
                _log_path(self.client, self.run_id, str(path), artifact_path)  # a folder: its contents
                self._artifacts.pop()
            except Exception as e:  # noqa: BLE001
                self._went_away(e)

    def artifacts(self, folder: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.artifact(folder, artifact_path)

    def _went_away(self, e: Exception) -> None:
        if not self.offline:
            log.warning("MLflow server %s unreachable (%s)", tracking_uri(), str(e).splitlines()[0][:200])
        self.offline = True

    def tags(self, tags: dict[str, Any]) -> None:
        self.journal["tags"].update({k: str(v) for k, v in tags.items()})
        self._tags.update({k: str(v) for k, v in tags.items()})
        if not self.offline:
            try:
                for k in list(self._tags):
                    self.client.set_tag(self.run_id, k, self._tags.pop(k))
            except Exception as e:  # noqa: BLE001
                self._went_away(e)

    def state_dict(self, state: dict[str, Any], artifact_path: str) -> None:
        """A state dict in MLflow's format: `mlflow.pytorch.load_state_dict(f"runs:/{run_id}/{artifact_path}",
        weights_only=True)` loads it back. Written beside the pending store first, so that it survives
        an unreachable server."""
        import shutil

        import mlflow.pytorch

        folder = project_root() / PENDING_DIR / f"{self.run_id}-{artifact_path}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        mlflow.pytorch.save_state_dict(state, str(folder))
        kept = len(self._artifacts)
        self.artifact(folder, artifact_path)
        if len(self._artifacts) == kept:  # sent: the local copy is not needed
            shutil.rmtree(folder, ignore_errors=True)

    def close(self, status: str | None = None) -> None:
        """Ends the run with `status`; if the server is away, everything unsent goes to the pending store."""
        self.flush()
        end_ms = None
        if status:  # the run's end, one time for the store and the journal (so the record's wall time is the store's)
            end_ms = self.journal["end_ms"] = int(time.time() * 1000)
        deadline = time.monotonic() + self.GRACE_S  # a server being restarted: wait for it a little
        while self.offline and not self._server_back(force=True) and time.monotonic() < deadline:
            time.sleep(2)
        if not self.offline:
            self.flush()
        if not self.offline:
            try:
                for path, artifact_path in self._artifacts:
                    _log_path(self.client, self.run_id, path, artifact_path)
                self._artifacts = []
                for k in list(self._tags):
                    self.client.set_tag(self.run_id, k, self._tags.pop(k))
                if status:
                    self.client.set_terminated(self.run_id, status, end_time=end_ms)
                if (project_root() / PENDING_DIR / f"{self.run_id}.json").exists():
                    sync_pending(only=self.run_id)  # what this run's start kept (its dataset input)
                return
            except Exception as e:  # noqa: BLE001
                self._went_away(e)
        path = save_pending(self.run_id, self._unsent, self._artifacts, self._tags, status, end_ms=end_ms)
        log.warning("MLflow server %s unreachable: run %s's last %d metric values, %d artifacts and its end "
                    "(%s) are kept in %s; send them with `python -m pipeline.tracking sync` once it is back",
                    tracking_uri(), self.run_id, len(self._unsent), len(self._artifacts), status, path)


def _log_path(client, run_id: str, path: str, artifact_path: str | None) -> None:
    if Path(path).is_dir():
        client.log_artifacts(run_id, path, artifact_path)
    else:
        client.log_artifact(run_id, path, artifact_path)


def save_pending(run_id: str, metrics: list, artifacts: list, tags: dict[str, str], status: str | None,
                 inputs: list[dict[str, Any]] | None = None, end_ms: int | None = None) -> Path:
    """Writes what could not be sent for `run_id` to the pending store (merged with what is there);
    `inputs`: dataset inputs (DATASET_FIELDS and their context); `end_ms`: when the run ended (with `status`)."""
    path = project_root() / PENDING_DIR / f"{run_id}.json"
    old = json.loads(path.read_text()) if path.exists() else {"metrics": [], "artifacts": [], "tags": {}}
    data = {"run_id": run_id, "tracking_uri": tracking_uri(), "status": status or old.get("status"),
            "metrics": old["metrics"] + [[m.key, m.value, m.timestamp, m.step] for m in metrics],
            "artifacts": old["artifacts"] + [[str(p), a] for p, a in artifacts], "tags": {**old["tags"], **tags},
            "inputs": old.get("inputs", []) + list(inputs or []), "end_ms": end_ms or old.get("end_ms")}
    write_json(path, data)
    return path


def sync_pending(root: Path | None = None, only: str | None = None) -> int:
    """Sends every run kept in the pending store (or only run `only`) to its tracking server; returns
    how many were sent."""
    import mlflow
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric

    sent = 0
    for path in sorted(((root or project_root()) / PENDING_DIR).glob(f"{only or '*'}.json")):
        data = json.loads(path.read_text())
        check_reachable(10.0, data["tracking_uri"])
        client = mlflow.MlflowClient(data["tracking_uri"])
        metrics = [Metric(k, v, ts, step) for k, v, ts, step in data["metrics"]]
        for i in range(0, len(metrics), 1000):
            client.log_batch(data["run_id"], metrics=metrics[i:i + 1000], synchronous=True)
        for p, artifact_path in data["artifacts"]:
            if Path(p).exists():
                _log_path(client, data["run_id"], p, artifact_path)
            else:
                log.warning("%s no longer exists: not uploaded to run %s", p, data["run_id"])
        for k, v in data.get("tags", {}).items():
            client.set_tag(data["run_id"], k, v)
        for kept in data.get("inputs", []):
            dataset = Dataset(**{k: kept[k] for k in DATASET_FIELDS})
            client.log_inputs(data["run_id"], datasets=[
                DatasetInput(dataset, tags=[InputTag("mlflow.data.context", kept["context"])])])
        if data["status"]:
            client.set_terminated(data["run_id"], data["status"], end_time=data.get("end_ms"))
        path.unlink()
        log.info("run %s: %d metric values, %d artifacts and its end (%s) sent to %s", data["run_id"],
                 len(metrics), len(data["artifacts"]), data["status"], data["tracking_uri"])
        sent += 1
    return sent


@contextlib.contextmanager
def run_logger(run_id: str, end_status: str | None = None,
               journal: dict[str, Any] | None = None) -> Iterator[RunLogger]:
    """Log to an existing run; on error the run is marked FAILED."""
    logger = RunLogger(run_id, journal)
    try:
        yield logger
    except BaseException:
        logger.close("FAILED")
        raise
    else:
        logger.close(end_status)


if __name__ == "__main__":
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m pipeline.tracking",
                                 description="sync: send the runs kept in <root>/mlflow-pending/ (written while "
                                             "the tracking server was unreachable) to their server.")
    ap.add_argument("command", choices=["sync"])
    ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s tracking: %(message)s", datefmt="%H:%M:%S")
    try:
        print(f"{sync_pending()} run(s) sent")
    except UserError as e:
        print(f"error (tracking sync): {e}", file=sys.stderr)
        sys.exit(2)
