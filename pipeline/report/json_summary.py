"""ablation.json: the Analysis as plain, machine-readable numbers (its format: pipeline.report's docstring)."""
from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from pipeline.report.analysis import (CELL_METRICS, METRICS, Analysis, _final_gamma, _values, environment,
                                      floor_metrics, wall_times)
from pipeline.stats import t_interval


def _agreed(counts: Counter) -> Any:
    """The value when all runs agree, else the sorted distinct values (for the JSON)."""
    values = sorted(counts, key=str)
    return values[0] if len(values) == 1 else values


def _plain(x: Any) -> Any:
    """JSON-ready: numpy scalars to Python, nan and inf to None, tuples to lists."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def _int_or_str(v: Any) -> Any:
    try:
        return int(v)
    except (TypeError, ValueError):
        return v


def summary(a: Analysis) -> dict[str, Any]:
    """ablation.json: the report's numbers, machine-readable (see pipeline.report's docstring)."""
    def cell_stats(values: list[float]) -> dict[str, Any]:
        mean, hw, n = t_interval(values)
        return {"mean": mean, "ci95": [mean - hw, mean + hw], "n": n}

    env = environment(a.runs)
    return _plain({
        "grid": a.grid,
        "generated_from": {"experiment": a.p.mlflow.experiment},
        "budget": {"steps": _agreed(_values(a.runs, lambda r: _int_or_str(r.params.get("train.steps")))),
                   "batch_size": _agreed(_values(a.runs, lambda r: _int_or_str(r.params.get("train.batch_size")))),
                   "n_samples": _agreed(_values(a.runs, lambda r: _int_or_str(r.params.get("evaluate.n_samples"))))}
        if a.runs else {"steps": None, "batch_size": None, "n_samples": None},
        "environment": {k: (_agreed(v) if a.runs else None) for k, v in env.items() if k != "precision"},
        "wall_time_s": wall_times(a.runs),
        "floor": floor_metrics(a.runs),
        "axes": a.axes,
        "seeds": a.seeds,
        "runs": [{"cell": r.cell, "seed": r.seed, "run_id": r.run_id, "metrics": r.metrics} for r in a.runs],
        "cells": {c: {m: cell_stats([r.metrics[m] for r in a.runs if r.cell == c and m in r.metrics])
                      for m in CELL_METRICS} for c in a.cells},
        "contrasts": [{"metric": e.metric, "axis": e.axis, "a": e.a, "b": e.b, "mean_diff": e.mean_diff,
                       "ci95": list(e.contrast.ci95), "n_pairs": e.n_pairs, "p": e.p_value, "p_holm": e.p_holm,
                       "significant": e.significant, "mde80": e.mde80, "seeds_needed": e.seeds_needed}
                      for m in METRICS for e in a.effects[m]],
        "interactions": [{"metric": i.metric, "axis": i.axis, "a": i.a, "b": i.b, "by_axis": i.by_axis,
                          "c": i.c, "d": i.d, "mean_diff_of_diffs": i.contrast.mean, "ci95": list(i.contrast.ci95),
                          "n": i.contrast.n, "p": i.contrast.p, "p_holm": i.p_holm, "significant": i.significant}
                         for m in METRICS for i in a.interactions[m]],
        "ranking": {str(s): order for s, order in a.ranking.items()},
        "quick_fid": {str(s): means for s, means in a.quick_fid.items()},
        "gamma_final": {c: {layer: cell_stats([g for r in a.runs if r.cell == c
                                               and (g := _final_gamma(r, layer)) is not None])
                            for layer in a.gamma_layers} for c in a.cells},
        "missing": [[c, s] for c, s in a.missing],
    })
