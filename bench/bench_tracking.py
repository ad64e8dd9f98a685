"""One `mlflow server`'s capacity on this machine (SQLite store, proxied artifacts), for docs/scale.md.

    python bench/bench_tracking.py                    # 4 clients, 20 s of metric batches, 20 s of uploads
    python bench/bench_tracking.py --clients 1 --json /tmp/one.json
    python bench/bench_tracking.py --batch-size 1000  # the batches a training run sends (RunLogger.BATCH)

Starts the venv's `mlflow server` on 127.0.0.1 in a temporary folder, then K client processes, each
with its own run, call `MlflowClient.log_batch` (--batch-size metrics per call) for --seconds, then
`log_artifact` of a 50 KB blob (a PNG's size) through the proxied `mlflow-artifacts:` root for
--artifact-seconds. Clients and server share this machine's cores: run it on an idle machine.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from pipeline import cpu  # noqa: E402

MLFLOW = Path(sys.executable).parent / "mlflow"
ARTIFACT_BYTES = 50 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp: Path, workers: str | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
           "--artifacts-destination", str(tmp / "artifacts"), "--host", "127.0.0.1", "--port", str(port)]
    if workers:
        cmd += ["--workers", workers]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # as tests/e2e.py: no GenAI job runner
    with open(tmp / "server.log", "wb") as log:  # the server keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                return proc, url
        except OSError:
            time.sleep(0.3)
    stop_server(proc)
    tail = (tmp / "server.log").read_text(errors="replace")[-3000:]
    raise SystemExit(f"mlflow server did not answer /health within 120 s:\n{tail}")


def stop_server(proc: subprocess.Popen) -> None:
    """Stops the process group the server was started in (its workers with it), then any process of
    its tree that outlived it."""
    started = tree(proc)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for p in started[1:]:  # psutil checks it is still the same process (pid and start time)
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def pss_mib(proc: subprocess.Popen) -> float:
    """Proportional set size of the server tree: RSS double-counts the pages its workers share."""
    total = 0
    for p in tree(proc):
        with contextlib.suppress(psutil.Error):
            total += p.memory_full_info().pss
    return total / 2**20


def tree(proc: subprocess.Popen) -> list[psutil.Process]:
    try:
        p = psutil.Process(proc.pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


class ServerSampler(threading.Thread):
    """Peak RSS and CPU seconds of the server process and its children while a phase runs."""

    def __init__(self, proc: subprocess.Popen):
        super().__init__(daemon=True)
        self.proc, self.stop, self.peak_rss, self.cpu_s = proc, threading.Event(), 0, {}

    def _sample(self) -> None:
        rss = 0
        for p in tree(self.proc):
            try:
                rss += p.memory_info().rss
                t = p.cpu_times()
                self.cpu_s[p.pid] = t.user + t.system
            except psutil.NoSuchProcess:
                pass
        self.peak_rss = max(self.peak_rss, rss)

    def run(self) -> None:
        while not self.stop.is_set():
            self._sample()
            self.stop.wait(0.5)
        self._sample()

    def cpu_total(self) -> float:
        return sum(self.cpu_s.values())


def client(idx: int, url: str, experiment_id: str, phase: str, batch: int, seconds: float,
           barrier, results) -> None:
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # an overloaded server shows as errors, not as waits
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "30"
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    c = MlflowClient(url)
    run = c.create_run(experiment_id, run_name=f"bench-{phase}-{idx}")
    run_id = run.info.run_id
    folder = tempfile.TemporaryDirectory(prefix="bench-blob-")
    blob = Path(folder.name) / "grid.png"
    blob.write_bytes(os.urandom(ARTIFACT_BYTES))  # incompressible, like a PNG
    keys = [f"m{i:02d}" for i in range(batch)]
    latencies, errors, n = [], 0, 0
    barrier.wait(timeout=180)
    cpu0, t_end = time.process_time(), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        try:
            if phase == "metrics":
                ts = int(time.time() * 1000)
                c.log_batch(run_id, metrics=[Metric(k, float(n), ts, n) for k in keys])
            else:
                c.log_artifact(run_id, str(blob), f"samples/{n}")
            latencies.append(time.perf_counter() - t0)
            n += 1
        except Exception as e:  # noqa: BLE001 - counted, reported
            errors += 1
            if errors == 1:
                print(f"client {idx}: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
    cpu_s = time.process_time() - cpu0
    c.set_terminated(run_id)
    stored = len(c.get_metric_history(run_id, keys[0])) if phase == "metrics" else None
    folder.cleanup()
    results.put({"client": idx, "calls": n, "errors": errors, "latencies": latencies, "cpu_s": cpu_s,
                 "run_id": run_id, "artifact_uri": run.info.artifact_uri, "stored": stored})


def phase(proc, url: str, experiment_id: str, name: str, clients: int, batch: int, seconds: float) -> dict:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(clients + 1), ctx.Queue()
    procs = [ctx.Process(target=client, args=(i, url, experiment_id, name, batch, seconds, barrier, results))
             for i in range(clients)]
    sampler = ServerSampler(proc)
    try:
        for p in procs:
            p.start()
        barrier.wait(timeout=120)  # every client imported mlflow and created its run
        sampler._sample()
        cpu0 = sampler.cpu_total()
        sampler.start()
        t0 = time.perf_counter()
        out = [results.get(timeout=seconds + 120) for _ in procs]
        wall = time.perf_counter() - t0
    finally:
        sampler.stop.set()
        for p in procs:  # the clients this phase started: finished, or stopped here
            if p.pid is None:
                continue
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join()
    if sampler.is_alive():
        sampler.join()
    out.sort(key=lambda r: r["client"])
    lat = sorted(x for r in out for x in r["latencies"])
    calls = sum(r["calls"] for r in out)
    res = {
        "phase": name, "clients": clients, "seconds": seconds,
        "calls": calls, "errors": sum(r["errors"] for r in out),
        "calls_per_s": calls / seconds,
        "calls_per_s_per_client": [round(r["calls"] / seconds, 2) for r in out],
        "latency_ms_p50": 1000 * statistics.median(lat) if lat else None,
        "latency_ms_p95": 1000 * lat[int(0.95 * (len(lat) - 1))] if lat else None,
        "server_rss_mib_peak": sampler.peak_rss / 2**20,
        "server_pss_mib_end": pss_mib(proc),
        "server_processes": len(tree(proc)),
        "server_cpu_s_per_s": (sampler.cpu_total() - cpu0) / wall,
        "clients_cpu_s_per_s": sum(r["cpu_s"] for r in out) / seconds,
    }
    if name == "metrics":
        res["batch_size"] = batch
        res["values_per_s"] = calls * batch / seconds
        # every batch stored: one value per call in each client's metric history
        res["stored_ok"] = all(r["stored"] == r["calls"] for r in out)
    else:
        res["artifact_bytes"] = ARTIFACT_BYTES
        res["mb_per_s"] = calls * ARTIFACT_BYTES / seconds / 1e6
        res["artifact_uri"] = out[0]["artifact_uri"]
    return res


def machine() -> dict:
    import mlflow

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return {"date": dt.date.today().isoformat(), "cpu": cpu.model(), "cpu_class": cpu.effective_class(),
            "cpu_uarch": cpu.microarchitecture(), "cores": os.cpu_count(), "mlflow": mlflow.__version__,
            "python": platform.python_version(), "git_commit": commit.stdout.strip() or "unknown",
            "load_avg_1m_at_start": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=4, help="concurrent client processes, one run each")
    ap.add_argument("--seconds", type=float, default=20.0, help="duration of the metrics phase")
    ap.add_argument("--artifact-seconds", type=float, default=None,
                    help="duration of the artifact phase (default: --seconds; 0 skips it)")
    ap.add_argument("--batch-size", type=int, default=20, help="metrics per log_batch call")
    ap.add_argument("--workers", default=None, help="mlflow server --workers (default: mlflow's own, 4)")
    ap.add_argument("--json", type=Path, help="write the results here")
    a = ap.parse_args()
    art_s = a.seconds if a.artifact_seconds is None else a.artifact_seconds
    info = machine()
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        proc, url = start_server(tmp, a.workers)
        startup_s = time.perf_counter() - t0
        try:
            from mlflow import MlflowClient

            c = MlflowClient(url)
            exp_id = c.create_experiment("bench-tracking")  # the server's default artifact root
            exp = c.get_experiment(exp_id)
            idle_rss = sum(p.memory_info().rss for p in tree(proc)) / 2**20
            idle_pss = pss_mib(proc)
            n_procs = len(tree(proc))
            phases = [phase(proc, url, exp_id, "metrics", a.clients, a.batch_size, a.seconds)]
            if art_s > 0:
                phases.append(phase(proc, url, exp_id, "artifacts", a.clients, a.batch_size, art_s))
            stored_files = sum(1 for p in (tmp / "artifacts").rglob("*") if p.is_file())
        finally:
            stop_server(proc)
    result = {**info, "command": "python bench/bench_tracking.py " + " ".join(sys.argv[1:]),
              "server": {"workers": a.workers or "default (4)", "backend": "sqlite",
                         "artifact_root": exp.artifact_location, "startup_s": round(startup_s, 1),
                         "idle_rss_mib": round(idle_rss, 1),
                         "idle_pss_mib": round(idle_pss, 1), "processes": n_procs,
                         "artifact_files_stored": stored_files},
              "phases": phases, "load_avg_1m_at_end": os.getloadavg()[0]}
    print_table(result)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {a.json}")


def print_table(r: dict) -> None:
    s = r["server"]
    print(f"{r['date']}  {r['cpu']} ({r['cpu_uarch']}, {r['cpu_class']}), {r['cores']} cores, mlflow "
          f"{r['mlflow']}, load {r['load_avg_1m_at_start']:.2f} at start, {r['load_avg_1m_at_end']:.2f} at end")
    print(f"server: sqlite, --workers {s['workers']}, artifact root {s['artifact_root']}, up in "
          f"{s['startup_s']} s, {s['processes']} processes, idle RSS {s['idle_rss_mib']:.0f} MiB (PSS "
          f"{s['idle_pss_mib']:.0f} MiB)")
    print(f"{'phase':<10} {'clients':>7} {'calls/s':>9} {'per client':>22} {'values/s':>9} {'MB/s':>6} "
          f"{'p50 ms':>7} {'p95 ms':>7} {'errors':>6} {'srv RSS MiB':>11} {'srv CPU':>7} {'cli CPU':>7}")
    for p in r["phases"]:
        per = ", ".join(f"{x:.1f}" for x in p["calls_per_s_per_client"])
        print(f"{p['phase']:<10} {p['clients']:>7} {p['calls_per_s']:>9.1f} {per:>22} "
              f"{p.get('values_per_s', 0):>9.0f} {p.get('mb_per_s', 0):>6.2f} {p['latency_ms_p50'] or 0:>7.1f} "
              f"{p['latency_ms_p95'] or 0:>7.1f} {p['errors']:>6} {p['server_rss_mib_peak']:>11.0f} "
              f"{p['server_cpu_s_per_s']:>7.2f} {p['clients_cpu_s_per_s']:>7.2f}")
    m = r["phases"][0]
    print(f"metrics: {m['batch_size']} values a call; every batch stored: {m['stored_ok']}. "
          f"CPU columns: CPU seconds a second (server tree / all clients).")


if __name__ == "__main__":
    main()
