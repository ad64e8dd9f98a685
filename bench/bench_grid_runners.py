"""The grid's runners side by side on this machine: the smoke grid's wall time with `--runner local` and
`--runner ray` (a Ray instance started by the driver), Ray's start-up and its memory, for docs/scale.md.

    python bench/bench_grid_runners.py                      # in a clone of the project (its own store)
    python bench/bench_grid_runners.py --rounds 2 --json /tmp/runners.json

Runs, in the current project folder, `python -m pipeline.grid run --runner R --name bench-R[-k] --steps 10
--seeds 0 1 --n-samples 200 --no-report` (the CI smoke grid: 12 runs, 2 at a time), alternating the
runners round by round, and samples the memory (RSS and PSS) of Ray's own processes (GCS, raylet, agents,
idle workers; not the runs) every 0.5 s while Ray runs. The runs go to this folder's MLflow store: use a
throw-away clone. Nothing else should share the cores while it runs.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from pipeline import cpu  # noqa: E402

RAY_NAMES = ("gcs_server", "raylet", "ray::", "dashboard", "log_monitor.py", "monitor.py", "runtime_env_agent")


def ray_processes(driver: psutil.Process) -> list[psutil.Process]:
    """Ray's processes started by this driver (its descendants), without the runs' cell processes."""
    procs = []
    for p in driver.children(recursive=True):
        try:
            argv = p.cmdline()
        except psutil.Error:
            continue
        if "pipeline.grid" in argv and "cell" in argv:  # a run, not Ray
            continue
        cmd = " ".join(argv)
        if any(name in cmd for name in RAY_NAMES) or p.name().startswith("ray::"):
            procs.append(p)
    return procs


def sample_memory(driver: psutil.Process, stop: threading.Event, peaks: dict) -> None:
    """Peak memory of Ray's processes, and the CPU seconds each used (its last reading before it ended)."""
    cpu_by_pid = peaks.setdefault("cpu_by_pid", {})
    while not stop.wait(0.5):
        rss = pss = 0
        n = 0
        for p in ray_processes(driver):
            try:
                mem = p.memory_full_info()
                times = p.cpu_times()
                cpu_by_pid[p.pid] = times.user + times.system
            except psutil.Error:
                continue
            rss += mem.rss
            pss += getattr(mem, "pss", mem.rss)
            n += 1
        if rss > peaks.get("rss", 0):
            peaks.update(rss=rss, pss=pss, processes=n)


def run_grid(runner: str, name: str) -> dict:
    cmd = [sys.executable, "-m", "pipeline.grid", "run", "--runner", runner, "--name", name, "--steps", "10",
           "--seeds", "0", "1", "--n-samples", "200", "--no-report"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stop, peaks = threading.Event(), {}
    sampler = threading.Thread(target=sample_memory, args=(psutil.Process(proc.pid), stop, peaks), daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    connected = re.search(r"connected in ([\d.]+) s", out)
    runs = [float(s) for s in re.findall(r"done in (\d+) s", out)]
    return {"runner": runner, "name": name, "wall_s": round(wall, 1), "runs": len(runs),
            "mean_run_s": round(sum(runs) / len(runs), 1) if runs else None,
            "ray_connect_s": float(connected.group(1)) if connected else None,
            "ray_peak_rss_mb": round(peaks["rss"] / 2**20) if peaks.get("rss") else None,
            "ray_peak_pss_mb": round(peaks["pss"] / 2**20) if peaks.get("rss") else None,
            "ray_processes": peaks.get("processes"),
            "ray_cpu_s": round(sum(peaks.get("cpu_by_pid", {}).values()), 1) if runner == "ray" else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=1, help="local, ray pairs (alternating)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--runners", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    args = ap.parse_args()
    stamp = dt.datetime.now().strftime("%H%M%S")
    results = []
    for k in range(args.rounds):
        for runner in args.runners:
            res = run_grid(runner, f"bench-{runner}-{stamp}-{k}")
            results.append(res)
            print(json.dumps(res), flush=True)
    info = {"date": dt.date.today().isoformat(), "cpu": cpu.describe(), "results": results}
    for runner in ("local", "ray"):
        walls = [r["wall_s"] for r in results if r["runner"] == runner]
        info[f"{runner}_wall_s"] = walls
    if not (info["local_wall_s"] and info["ray_wall_s"]):
        print(json.dumps(info))
        return
    local, ray = min(info["local_wall_s"]), min(info["ray_wall_s"])
    info["ray_over_local"] = round(ray / local, 3)
    print(f"smoke grid (12 runs): local {local:.0f} s, ray {ray:.0f} s: ray/local {ray / local:.3f} "
          f"({cpu.describe()['uarch']})")
    if args.json:
        args.json.write_text(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
