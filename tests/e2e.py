"""Helpers for end-to-end tests: a throw-away git + DVC repository holding a copy of the project."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
# results/ without the published grids' records: the report stage's dependency, as a clone has it
PROJECT_FILES = ["pipeline", "stages", "bench", "data/mnist-t10k", "results/README.md", "dvc.yaml", "params.yaml",
                 "pyproject.toml", ".gitignore", ".dvcignore", ".dvc/config", ".dvc/.gitignore", ".dvc/plots"]

# the browser for page tests: $CHROMIUM (e.g. Chrome on a GitHub runner), else Debian's chromium
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# a budget that exercises every stage in seconds
TINY = {
    "train": {"steps": 6, "ema_start": 2, "batch_size": 16, "checkpoint_every": 3, "log_every": 2, "eval_every": 3,
              "eval_n": 50, "snapshot_every": 2, "precision": "fp32", "threads": 1},
    "sample": {"n": 200, "grid_rows": 4},
    "evaluate": {"n_samples": 100, "draws": 2, "classifier": {"epochs": 1}, "classifier_b": {"epochs": 1}},
    "ablation": {"seeds": [0, 1], "steps": 4, "n_samples": 100, "jobs": 2},
    # logging the generator as an MLflow model costs ~5 CPU-s a run: the tests of that model turn it on
    "mlflow": {"log_model": False},
}


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{VENV_BIN}{os.pathsep}{e.get('PATH', '')}"
    e.pop("MLFLOW_TRACKING_URI", None)
    e.pop("DVC_ROOT", None)
    e["PYTHONUNBUFFERED"] = "1"
    e["DVC_NO_ANALYTICS"] = "1"
    return e


def run(cmd: list[str] | str, cwd: Path, check: bool = True, timeout: int = 600, **kw) -> subprocess.CompletedProcess:
    if isinstance(cmd, str):
        cmd = cmd.split()
    res = subprocess.run(cmd, cwd=cwd, env=kw.pop("env", env()), capture_output=True, text=True,
                         timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {res.returncode}\n"
                             f"--- stdout\n{res.stdout[-4000:]}\n--- stderr\n{res.stderr[-6000:]}")
    return res


def deep_update(d: dict, u: dict) -> dict:
    for k, v in u.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            deep_update(d[k], v)
        else:
            d[k] = v
    return d


def _write_params(path: Path, overrides: dict | None) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    deep_update(params, TINY)
    deep_update(params, overrides or {})
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def prepared_template(tmp_path_factory) -> Path:
    """A repository (TINY params) where `dvc repro train_evaluator train_evaluator_b` has run and dvc.lock is
    committed: the stages every experiment shares. Built once per test session, also across pytest-xdist's
    workers (their temporary folders share a parent; a file lock makes the first builder the only
    one); `make_repo(..., template=...)` copies it."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    path = base / "prepared-template" / "repo"
    with FileLock(str(base / "prepared-template.lock")):
        if not (base / "prepared-template.done").exists():
            shutil.rmtree(path.parent, ignore_errors=True)
            make_repo(path)
            run(["dvc", "repro", "train_evaluator", "train_evaluator_b"], path, timeout=900)
            for store in ("mlflow.db", "mlruns"):
                if (path / store).is_dir():
                    shutil.rmtree(path / store)
                elif (path / store).exists():
                    (path / store).unlink()
            # an empty tracking store, its tables made: MLflow's schema migrations take seconds, once
            run([sys.executable, "-c", "import mlflow, sys; mlflow.MlflowClient(sys.argv[1]).search_experiments()",
                 f"sqlite:///{path / 'mlflow.db'}"], path)
            run(["git", "add", "-A"], path)
            run(["git", "commit", "-qm", "shared stages"], path)
            (base / "prepared-template.done").touch()
    return path


def stage_children(proc: subprocess.Popen) -> dict[str, object]:
    """The stage processes `dvc repro` (proc) runs now, by stage name: its own children only, so never
    another test's (pytest-xdist runs others beside it), and cheap to ask ten times a second."""
    import psutil

    candidates: dict[str, list] = {}
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return {}
    for child in children:
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        for arg in cmd:
            if arg.startswith("stages."):
                candidates.setdefault(arg.removeprefix("stages."), []).append(child)
    # a stage's own subprocesses (git, a CPU probe) carry its command line between fork and exec: the
    # stage is the one whose parent is not among them
    found = {}
    for stage, procs in candidates.items():
        pids = {c.pid for c in procs}
        for c in procs:
            with contextlib.suppress(psutil.Error):
                if c.ppid() not in pids:
                    found[stage] = c
    return found


def repro_watching_stages(repo: Path, targets: list[str] | None = None, timeout: float = 900) -> dict[str, float]:
    """`dvc repro [targets]`, and the CPU seconds each stage's process used (read ten times a second, so
    up to 0.1 s short): when to kill a stage so that it dies in its work, not in its imports, on a machine
    busy or not (CPU time, unlike wall time, does not stretch with the load)."""
    import psutil

    log_file = repo.parent / f"{repo.name}.repro.log"
    with open(log_file, "w") as log:
        proc = subprocess.Popen(["dvc", "repro", *(targets or [])], cwd=repo, env=env(), stdout=log, stderr=log)
        used: dict[str, float] = {}
        deadline = time.time() + timeout
        while proc.poll() is None and time.time() < deadline:
            for stage, child in stage_children(proc).items():
                with contextlib.suppress(psutil.Error):  # it ended since
                    cpu = child.cpu_times()
                    used[stage] = max(used.get(stage, 0.0), cpu.user + cpu.system)
            time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise AssertionError(f"dvc repro exited {proc.returncode}\n{log_file.read_text()[-6000:]}")
    log_file.unlink()
    return used


def make_repo(path: Path, overrides: dict | None = None, template: Path | None = None) -> Path:
    """A git repository with the project's files, DVC initialised, tiny params, all committed.
    `template` (from `prepared_template`): a copy of it instead, the shared stages already done and
    in its DVC cache, so a `dvc repro` runs only what the overrides change."""
    if template is not None:
        # .dvc/tmp holds DVC's locks and state for that folder: the copy starts its own
        shutil.copytree(template, path, symlinks=True, ignore=lambda d, names: ["tmp"] if d.endswith(".dvc") else [])
        _write_params(path, overrides)
        run(["git", "commit", "-qam", "params", "--allow-empty"], path)
        return path
    path.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if not src.exists():
            continue
        dst = path / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    _write_params(path, overrides)
    run(["git", "init", "-q", "-b", "main"], path)
    run(["git", "config", "user.email", "test@example.com"], path)
    run(["git", "config", "user.name", "test"], path)
    if not (path / ".dvc" / "config").exists():
        run(["dvc", "init", "-q"], path)
    run(["git", "add", "-A"], path)
    run(["git", "commit", "-qm", "project"], path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(backend_uri: str, cwd: Path, artifacts: Path | None = None, auth_config: Path | None = None,
                  port: int | None = None) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 (stopped on exit); yields its URL. `auth_config`: MLflow's
    basic-auth app with that configuration file; `port`: a fixed port (to restart a server in place)."""
    port = port or free_port()
    cmd = [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", backend_uri, "--workers", "1"]
    if artifacts is not None:
        cmd += ["--artifacts-destination", str(artifacts)]
    server_env = env()
    # MLflow's job runner (GenAI jobs: seven huey consumers) is not used here; without it the server
    # starts and stops in a few seconds instead of ~15
    server_env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    if auth_config is not None:
        cmd += ["--app-name", "basic-auth"]
        server_env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config)
        server_env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = "test-only-csrf-secret"  # the auth app refuses to start without one
    proc = subprocess.Popen(cmd, cwd=cwd, env=server_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                    break
            except urllib.error.HTTPError as err:
                if err.code in (401, 403):  # up, and asking for credentials
                    break
                time.sleep(0.5)
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("mlflow server did not start")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def kill_queue_workers(repo: Path, grace_s: float = 30.0) -> None:
    """Waits for the repo's DVC queue workers to exit and kills those that do not (a celery worker
    sometimes hangs after its last task; the grid does the same after `dvc queue stop`)."""
    from pipeline.grid import kill_lingering_workers

    kill_lingering_workers(Path(repo).resolve(), grace_s)
