"""ablation.json: the Analysis as plain, machine-readable numbers (its format: pipeline.report's docstring)."""
from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter
from typing import Any

import numpy as np

from pipeline.provenance import BATCH_FIELDS
from pipeline.report.analysis import Analysis
from pipeline.report.batching import Batch, Replication, replicate
from pipeline.report.contrasts import CELL_METRICS, METRICS, NOT_MEASURED, Effect
from pipeline.report.run_facts import _final_gamma, _values, environment, floor_metrics, seeds_ran_on, wall_times
from pipeline.report.margins import MarginBand, as_recorded
from pipeline.report.second_evaluator import NOT_MEASURED_B, second_evaluator
from pipeline.report.variance import variance_split
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


def _drift(e: Effect) -> Any:
    d = e.drift
    if d is None or d.settled is None:
        return {"settled": None, "note": NOT_MEASURED if d is None or not d.steps or len(d.steps) < 3 else d.reason}
    return {"settled": d.settled, "status": d.status, "power": d.power, "steps": list(d.steps),
            "mean_drift": d.drift.mean, "ci95": list(d.drift.ci95), "margin": d.equivalence.margin,
            "p_tost": d.equivalence.p}


def _contrast(e: Effect, floor: dict[str, float]) -> dict[str, Any]:
    """A contrast, its verdict and what it rests on (pipeline.report.contrasts.Effect)."""
    poi = e.improvement
    return {"metric": e.metric, "axis": e.axis, "a": e.a, "b": e.b, "mean_diff": e.mean_diff,
            "ci95": list(e.contrast.ci95), "ci_holm": [e.holm_ci.lo, e.holm_ci.hi] if e.holm_ci else None,
            "ci_holm_alpha": e.holm_ci.level if e.holm_ci else None, "n_seeds": e.n_seeds, "n_pairs": e.n_pairs,
            "seeds": e.seeds, "per_seed": e.per_seed, "sd_seeds": e.contrast.sd, "p": e.p_value, "p_holm": e.p_holm,
            "significant": e.significant, "margin": e.margin, "p_tost": e.p_tost, "p_tost_holm": e.p_tost_holm,
            "verdict": e.verdict, "better": e.better() if e.verdict == "matters" else None,
            "mde80": e.mde80, "mde80_holm": e.mde80_holm, "seeds_needed": e.seeds_needed,
            "p_improvement": poi.p if poi else None, "p_improvement_ci95": [poi.lo, poi.hi] if poi else None,
            "level_means": list(e.level_means), "share_of_gap_to_floor": e.gap_share(floor.get(e.metric, float("nan"))),
            "settled": _drift(e)}


def _band(b: MarginBand | None) -> Any:
    """A contrast's verdict at every margin (pipeline.report.margins): its thresholds."""
    if b is None:
        return None
    return {"testable": b.testable, "significant": b.significant,
            "difference_up_to": b.near,  # the Holm interval's end nearest 0: a difference for margins <= it
            "matters_up_to": b.matters_up_to,  # a difference that matters for margins <= |estimate|
            "equivalent_from": b.equivalent_from,  # too small to matter / equivalent for margins >= it
            "bands": [{"from": lo, "to": hi, "verdict": v} for lo, hi, v in b.bands(math.inf)]}


def _margins(a: Analysis) -> dict[str, Any]:
    """Each metric's margin: as configured, the absolute value it resolved to and from what; and the margins
    the runs' own params recorded (their ablation block), against it."""
    rec = as_recorded(a.p, a.primary_runs, list(METRICS))
    out = {}
    for m, r in a.margins.items():
        out[m] = {"configured": dataclasses.asdict(r.spec) if r.relative else r.spec, "value": r.value,
                  "how": r.how(), "reference_cell": r.reference_cell or None,
                  "reference_value": r.reference_value if r.relative else None,
                  "floor": r.floor if r.relative else None,
                  "recorded_in_runs": dict(rec.margins.get(m, {})),
                  "same_as_recorded": set(rec.margins.get(m, {})) == {rec.configured.get(m)}}
    return {"metrics": out, "runs_carry_this_grids_ablation_block": rec.own_block(a.grid),
            "recorded_ablation_blocks": dict(rec.blocks)}


def _budget_scan(a: Analysis) -> Any:
    """The primary batch's contrasts at every budget its checkpoints cover (pipeline.report.budget)."""
    scan = a.budget_scan
    if scan is None:
        return None

    def point(p) -> dict[str, Any]:
        d = p.drift
        has = d is not None and d.drift is not None
        return {"budget": p.budget, "mean_diff": p.effect.mean_diff, "ci95": list(p.effect.contrast.ci95),
                "n_seeds": p.effect.n_seeds, "drift_steps": list(d.steps) if d is not None else [],
                "mean_drift": d.drift.mean if has else None, "drift_ci95": list(d.drift.ci95) if has else None,
                "within_half_margin": p.within, "p_tost": d.equivalence.p if has and d.equivalence else None,
                "settled": p.settled}

    return {"budgets": scan.budgets, "floor": scan.floor, "planned": scan.planned,
            "contrasts": [{"metric": c.metric, "axis": c.axis, "a": c.a, "b": c.b, "margin": c.margin,
                           "settles_at": c.settles_at, "points": [point(p) for p in c.points]}
                          for c in scan.contrasts]}


def _batch(b: Batch, a: Analysis) -> dict[str, Any]:
    floor = floor_metrics(b.runs)
    return {"seeds": b.seeds, "runs": len(b.runs), "primary": b is a.primary, "complete": b.complete,
            "mixed": b.mixed, "key": dict(zip(BATCH_FIELDS, b.key)), "commits": b.commits, "floor": floor,
            "variance": {m: {"n_resampled": v.n_resampled, "sampling_source": v.source, "sampling_sd": v.sampling_sd, "seed_sd": v.seed_sd,
                             "training_sd": v.training_sd, "margin": a.margin(m)}
                         for m in METRICS for v in [variance_split(b.runs, m)]}}


def _replication(a: Analysis) -> list[dict[str, Any]]:
    def side(e: Effect) -> dict[str, Any]:
        return {"mean_diff": e.mean_diff, "ci95": list(e.contrast.ci95), "n_seeds": e.n_seeds, "verdict": e.verdict}

    def row(rp: Replication) -> dict[str, Any]:
        pooled = rp.pooled
        return {"metric": rp.primary.metric, "axis": rp.primary.axis, "a": rp.primary.a, "b": rp.primary.b,
                "primary": side(rp.primary), "other": side(rp.other), "prediction_interval": list(rp.interval),
                "agrees": rp.agrees, "p_heterogeneity": rp.p_heterogeneity, "heterogeneous": rp.heterogeneous,
                "pooled": ({"mean_diff": pooled.mean, "ci95": list(pooled.ci95), "n_seeds": pooled.n, "p": pooled.p}
                           if pooled else None)}

    return [{"other": name, "seeds": b.seeds, "runs": len(b.runs), "key": dict(zip(BATCH_FIELDS, b.key)),
             "contrasts": [row(rp) for rp in replicate(a.effects, b.effects)]} for name, b in a.others()]


def _second_evaluator(a: Analysis) -> dict[str, Any]:
    """Each FID and classifier-score contrast of the primary batch under evaluator A and evaluator B."""
    s = second_evaluator(a)
    if not s.measured:
        return {"measured": False, "note": NOT_MEASURED_B, "runs": s.runs, "runs_with_b": 0, "contrasts": []}

    def side(e: Effect | None) -> dict[str, Any] | None:
        if e is None:
            return None
        return {"mean_diff": e.mean_diff, "ci_holm": [e.holm_ci.lo, e.holm_ci.hi] if e.holm_ci else None,
                "n_seeds": e.n_seeds, "p_holm": e.p_holm, "margin": e.margin, "p_tost_holm": e.p_tost_holm,
                "verdict": e.verdict, "better": e.better() if e.verdict == "matters" else None}

    return {"measured": True, "runs": s.runs, "runs_with_b": s.runs_with_b,
            "evaluator_b_sha256": _agreed(s.checksums), "arch": _agreed(s.archs), "floor_a": s.floor_a,
            "floor_b": s.floor_b, "margins": s.margins,
            "contrasts": [{"metric": c.a.metric, "axis": c.a.axis, "a": c.a.a, "b": c.a.b,
                           "evaluator_a": side(c.a), "evaluator_b": side(c.b), "holds": c.holds} for c in s.checks]}


def _vs_floor(a: Analysis) -> dict[str, Any]:
    """Each cell of the primary batch as a multiple of its floor's FID and a share of its floor's classifier score."""
    floor = floor_metrics(a.primary_runs)
    out = {}
    for c in a.cells:
        mean = {m: t_interval([r.metrics[m] for r in a.primary_runs if r.cell == c and m in r.metrics])[0]
                for m in ("fid", "classifier_score")}
        out[c] = {"fid_multiple_of_floor": mean["fid"] / floor["fid"] if floor.get("fid") else None,
                  "classifier_score_share_of_floor": (mean["classifier_score"] / floor["classifier_score"]
                                                      if floor.get("classifier_score") else None)}
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
        "floor": floor_metrics(a.primary_runs),
        "primary_batch": a.primary.seeds if a.primary else None,
        "batches": [_batch(b, a) for b in a.batches],
        "axes": a.axes,
        "seeds": a.seeds,
        "runs": [{"cell": r.cell, "seed": r.seed, "run_id": r.run_id, "metrics": r.metrics} for r in a.runs],
        "cells": {c: {m: cell_stats([r.metrics[m] for r in a.primary_runs if r.cell == c and m in r.metrics])
                      for m in CELL_METRICS} for c in a.cells},
        "cells_vs_floor": _vs_floor(a),
        "margins": _margins(a),
        "contrasts": [{**_contrast(e, floor_metrics(a.primary_runs)), "margin_band": _band(b)}
                      for m in METRICS for e, b in itertools.zip_longest(a.effects[m], a.bands.get(m, []))],
        "interactions": [{"metric": i.metric, "axis": i.axis, "a": i.a, "b": i.b, "by_axis": i.by_axis,
                          "c": i.c, "d": i.d, "mean_diff_of_diffs": i.contrast.mean, "ci95": list(i.contrast.ci95),
                          "n": i.contrast.n, "p": i.contrast.p, "p_holm": i.p_holm, "significant": i.significant,
                          "margin": a.margin(i.metric), "p_tost": i.equivalence.p if i.equivalence else None,
                          "p_tost_holm": i.p_tost_holm, "verdict": i.verdict}
                         for m in METRICS for i in a.interactions[m]],
        "seeds_ran_on": {str(seed): dict(machines) for seed, machines in seeds_ran_on(a.runs).items()},
        "replication": _replication(a),
        "second_evaluator": _second_evaluator(a),
        "budget_scan": _budget_scan(a),
        "ranking": {str(s): order for s, order in a.ranking.items()},
        "quick_fid": {str(s): means for s, means in a.quick_fid.items()},
        "gamma_final": {c: {layer: cell_stats([g for r in a.runs if r.cell == c
                                               and (g := _final_gamma(r, layer)) is not None])
                            for layer in a.gamma_layers} for c in a.cells},
        "missing": [[c, s] for c, s in a.missing],
    })
