"""ablation.json: the Analysis as plain, machine-readable numbers (its format: pipeline.report's docstring)."""
from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from pipeline.report.analysis import (CELL_METRICS, METRICS, Analysis, Effect, Replicated, _final_gamma, _values,
                                      environment, floor_metrics, replicate, seed_halves, seeds_ran_on, variance_split,
                                      wall_times)
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


def _three_way(e: Effect) -> dict[str, Any]:
    """The verdict and what it rests on (pipeline.report.analysis.Effect)."""
    poi = e.improvement
    return {"margin": e.margin, "p_tost": e.p_tost, "p_tost_holm": e.p_tost_holm, "verdict": e.verdict,
            "better": e.better() if e.verdict == "better" else None, "mde80_holm": e.mde80_holm,
            "p_improvement": poi.p if poi else None, "p_improvement_ci95": [poi.lo, poi.hi] if poi else None}


def _settled(a: Analysis) -> dict[str, Any]:
    st = a.settled
    return {"known": st.known, "settled": st.settled, "tau_last_two": st.tau_last_two,
            "steps": list(st.steps) if st.steps else None, "best": st.best, "best_since": st.best_since,
            "first_checked": st.first_checked}


def _replication(a: Analysis) -> list[dict[str, Any]]:
    def row(rp: Replicated) -> dict[str, Any]:
        return {"metric": rp.first.metric, "axis": rp.first.axis, "a": rp.first.a, "b": rp.first.b,
                "first": {"mean_diff": rp.first.mean_diff, "ci95": list(rp.first.contrast.ci95),
                          "verdict": rp.first.verdict},
                "second": {"mean_diff": rp.second.mean_diff, "ci95": list(rp.second.contrast.ci95),
                           "verdict": rp.second.verdict},
                "same_sign": rp.same_sign, "same_verdict": rp.same_verdict, "replicates": rp.replicates}

    out = [{"second": grid, "runs": len(other.runs),
            "contrasts": [row(rp) for rp in replicate(a.effects, other.effects)]}
           for grid, other in a.replications.items()]
    halves = seed_halves(a.p, a.runs, a.axes)
    if halves:
        first, second, e1, e2 = halves
        out.append({"first_seeds": first, "second_seeds": second,
                    "contrasts": [row(rp) for rp in replicate(e1, e2)]})
    return out


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
                       "significant": e.significant, "mde80": e.mde80, "seeds_needed": e.seeds_needed,
                       **_three_way(e)}
                      for m in METRICS for e in a.effects[m]],
        "interactions": [{"metric": i.metric, "axis": i.axis, "a": i.a, "b": i.b, "by_axis": i.by_axis,
                          "c": i.c, "d": i.d, "mean_diff_of_diffs": i.contrast.mean, "ci95": list(i.contrast.ci95),
                          "n": i.contrast.n, "p": i.contrast.p, "p_holm": i.p_holm, "significant": i.significant,
                          "margin": a.margin(i.metric), "p_tost": i.equivalence.p if i.equivalence else None,
                          "p_tost_holm": i.p_tost_holm, "verdict": i.verdict}
                         for m in METRICS for i in a.interactions[m]],
        "settled": _settled(a),
        "seeds_ran_on": {str(seed): dict(machines) for seed, machines in seeds_ran_on(a.runs).items()},
        "replication": _replication(a),
        "variance": {m: {"n_resampled": v.n_resampled, "sampling_sd": v.sampling_sd, "seed_sd": v.seed_sd,
                         "training_sd": v.training_sd, "margin": a.margin(m)}
                     for m in METRICS for v in [variance_split(a.runs, m)]},
        "ranking": {str(s): order for s, order in a.ranking.items()},
        "quick_fid": {str(s): means for s, means in a.quick_fid.items()},
        "gamma_final": {c: {layer: cell_stats([g for r in a.runs if r.cell == c
                                               and (g := _final_gamma(r, layer)) is not None])
                            for layer in a.gamma_layers} for c in a.cells},
        "missing": [[c, s] for c, s in a.missing],
    })
