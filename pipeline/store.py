"""The MLflow store: where it lives, whether it answers, the project's experiment in it.

The store is `sqlite:///<root>/mlflow.db` with artifacts in `<root>/mlruns`. `root` is DVC_ROOT when
DVC runs the stage (queued and --temp experiments run in a temporary copy that DVC deletes, but DVC_ROOT
still names the real repository) and the git top level otherwise. MLFLOW_TRACKING_URI overrides it.

MLflow traps handled here: several processes creating the database or the same experiment at once can
crash or file runs under "Default", so creation is guarded by a file lock and the experiment id is passed
explicitly; an experiment needs an absolute artifact location or artifacts land in the temporary copy.
"""
from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from filelock import FileLock

from pipeline.errors import UserError


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


LOCAL_UI = "http://127.0.0.1:5000"  # where the README's `mlflow ui --backend-store-uri sqlite:///mlflow.db` serves


def ui_url(experiment_id: str, run_id: str | None = None, uri: str | None = None) -> str:
    """The MLflow UI's page of a run, or of the experiment's runs (best FID first): on the tracking server
    itself, or for a local store where the README's `mlflow ui` serves it."""
    uri = uri or tracking_uri()
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_UI
    # workflowType: MLflow 3's UI opens in its GenAI mode unless the link (or the browser's last choice) says
    # otherwise; the experiment's kind tag (EXPERIMENT_TAGS) does not switch it
    if run_id:
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
    return (f"{base}/#/experiments/{experiment_id}/runs?orderByKey=metrics.%60fid%60&orderByAsc=true"
            f"&workflowType=machine_learning")


# MLflow retries an unreachable server for minutes by default (7 retries, exponential backoff: 4 min 18 s
# measured); the reachability check below answers first, and these bound a call during a run
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


def check_reachable(timeout_s: float = 10.0, uri: str | None = None) -> None:
    """Stops with one line naming the URI and the fix when the tracking store cannot be reached in
    `timeout_s` (`mlflow.connect_timeout_s`): before any work, not after an hour of training."""
    uri = uri or tracking_uri()
    fix = ("start the server, correct MLFLOW_TRACKING_URI, or unset it to log to the project's local store "
           f"(sqlite:///{project_root() / 'mlflow.db'})")
    if uri.startswith(("http://", "https://")):
        t0 = time.monotonic()
        # one cheap API call with the credentials MLflow will use: reachable, and letting us in
        req = urllib.request.Request(uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1")
        user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
        if user and password:
            req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        elif os.environ.get("MLFLOW_TRACKING_TOKEN"):
            req.add_header("Authorization", "Bearer " + os.environ["MLFLOW_TRACKING_TOKEN"])
        try:
            urllib.request.urlopen(req, timeout=timeout_s).close()
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                raise UserError(f"MLflow tracking server {uri} refused the request (HTTP {e.code}): set "
                                f"MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account of "
                                f"that server") from None
            raise UserError(f"MLflow tracking server {uri} answered HTTP {e.code}: {fix}") from None
        except (OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise UserError(f"MLflow tracking server {uri} is unreachable ({reason}; "
                            f"{time.monotonic() - t0:.1f} s): {fix}") from None
    elif _is_local_sqlite(uri):
        folder = Path(uri[len("sqlite:///"):]).resolve().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise UserError(f"MLflow store {uri}: folder {folder} is missing or not writable: {fix}")


def artifact_root(uri: str | None = None) -> str:
    """Artifacts of a local SQLite store live beside its database (<folder>/mlruns), so the store is one
    folder that can be moved or archived whole."""
    uri = uri or tracking_uri()
    if _is_local_sqlite(uri):
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlruns").as_uri()
    return (project_root() / "mlruns").as_uri()


def _is_local_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:///")


# MLflow 3's UI opens an experiment without this tag in its GenAI mode (Traces, Judges, Prompts): this one
# trains models, so its runs table, charts and model pages come first
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


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
            return client.create_experiment(experiment, artifact_location=location, tags=EXPERIMENT_TAGS)
        if exp.lifecycle_stage == "deleted":
            raise UserError(f"MLflow experiment {experiment!r} is deleted; restore it "
                            f"(`mlflow experiments restore`) or set mlflow.experiment to another name")
        for k, v in EXPERIMENT_TAGS.items():  # an experiment made before the tag
            if exp.tags.get(k) != v:
                client.set_experiment_tag(exp.experiment_id, k, v)
        return exp.experiment_id


def preflight(params) -> None:
    """What a stage that talks to MLflow checks before any work: the store answers."""
    check_reachable(params.mlflow.connect_timeout_s)
