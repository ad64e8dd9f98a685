"""Facts of a grid's runs, beside the contrasts: what they ran on (environment, machine_of, seeds_ran_on), how
long they took (wall_times), their real-data floor (floor_metrics) and their final attention gammas; and
the counters over runs the report's text and JSON summarise them with (_values, _tag, _param)."""
from __future__ import annotations

import math
from collections import Counter, defaultdict

from pipeline.report.runs import GridRun


def _values(runs: list[GridRun], get) -> Counter:
    return Counter(get(r) for r in runs)


def _tag(key: str):
    return lambda r: r.tags.get(key)


def _param(key: str):
    return lambda r: r.params.get(key)


def environment(runs: list[GridRun]) -> dict[str, Counter]:
    return {
        "machine_cpu": _values(runs, _tag("machine.cpu")),
        "machine_gpu": _values(runs, _tag("machine.gpu")),
        "device": _values(runs, _tag("runtime.device")),
        "precision": _values(runs, _tag("runtime.precision")),
        "torch": _values(runs, _tag("version.torch")),
        "commit": _values(runs, _tag("git.commit")),
        "evaluator_sha256": _values(runs, _tag("evaluator.sha256")),
        "data_source": _values(runs, _tag("data.source")),
        "data_sha256": _values(runs, _tag("data.sha256")),
        # runs evaluated before the tag existed drew the classifier score's splits the old way (version 1)
        "metrics_version": _values(runs, lambda r: r.tags.get("metrics.version", "1")),
    }


def wall_times(runs: list[GridRun]) -> dict[str, float]:
    """grid_span: earliest run start to latest run end (s); sum_of_runs: the runs' final.wall_s summed."""
    starts = [r.start_ms for r in runs if r.start_ms]
    ends = [r.end_ms for r in runs if r.end_ms]
    span = (max(ends) - min(starts)) / 1000 if starts and ends else math.nan
    walls = [r.metrics["final.wall_s"] for r in runs if "final.wall_s" in r.metrics]
    return {"grid_span": span, "sum_of_runs": float(sum(walls)) if walls else math.nan}


def floor_metrics(runs: list[GridRun]) -> dict[str, float]:
    """The real-data floor (held-out vs training data) as the first of `runs` that has one logged it: pass
    one batch's runs (one evaluator), as the report does, for that batch's floor."""
    for r in runs:
        floor = {k.split(".", 1)[1]: v for k, v in r.metrics.items() if k.startswith("floor.")}
        if floor:
            return floor
    return {}


def _final_gamma(r: GridRun, layer: str) -> float | None:
    curve = r.gamma_curves.get(layer)
    return curve[-1][1] if curve else r.metrics.get(layer)



def machine_of(r: GridRun) -> str:
    """What a run ran on, as the seed table shows it: the CPU's design (or class) or the GPU, and precision."""
    device = r.tags.get("runtime.device", "?")
    if device.startswith("cuda"):
        where = r.tags.get("machine.gpu", "GPU ?")
    else:
        where = r.tags.get("machine.cpu_uarch") or r.tags.get("machine.cpu", "CPU ?")
        if r.tags.get("machine.cpu_class"):
            where += f", {r.tags['machine.cpu_class']}"
    return f"{where}; {device}, {r.tags.get('runtime.precision', '?')}"


def seeds_ran_on(runs: list[GridRun]) -> dict[int, Counter]:
    """seed -> Counter of machine_of over its runs: a seed's cells should share one machine (its contrasts
    pair them)."""
    out: dict[int, Counter] = defaultdict(Counter)
    for r in runs:
        out[r.seed][machine_of(r)] += 1
    return dict(sorted(out.items()))
