"""The report's numbers: paired main effects and interactions (Holm-corrected per metric), the Analysis of a
grid computed once, and the environment, wall-time and real-data-floor facts of its runs."""
from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from pipeline import stats
from pipeline.config import Params
from pipeline.report.runs import GridRun

METRICS = {"fid": "lower", "classifier_score": "higher", "precision": "higher", "recall": "higher"}
CELL_METRICS = {**METRICS, "density": "higher", "coverage": "higher"}  # the per-cell table only
ALPHA = stats.ALPHA


# ---------------------------------------------------------------- contrasts


def oriented_pairs(levels: Sequence[str], chosen: str | None = None) -> list[tuple[str, str]]:
    """Every pair of `levels` as (a, b), read "a − b": b is `none` when one of them is; otherwise a is
    `chosen` (the level params.yaml sets) when one of them is; otherwise a is listed first. Contrasts
    against `none` come first. [none, pre, post] with post chosen: post − none, pre − none, post − pre."""
    def priority(level: str) -> tuple[int, int]:
        return (2 if level == "none" else 0 if level == chosen else 1, list(levels).index(level))

    ordered = sorted(levels, key=priority)
    pairs = list(itertools.combinations(ordered, 2))
    return sorted(pairs, key=lambda ab: (-priority(ab[1])[0], priority(ab[0]), priority(ab[1])))


def _axis_levels(axes: Mapping[str, Sequence] | Sequence[str], runs: list[GridRun]) -> dict[str, list[str]]:
    """axis -> its levels as strings (as MLflow logs them); a plain list of axes takes the levels
    present in the runs, sorted."""
    if isinstance(axes, Mapping):
        return {a: [str(v) for v in levels] for a, levels in axes.items()}
    return {a: sorted({r.axis(a) for r in runs}) for a in axes}


@dataclass
class Effect:
    """A paired contrast a − b of one axis on one metric."""
    axis: str
    a: str
    b: str
    metric: str
    contrast: stats.Contrast
    pairs_per_seed: int  # pairs a complete seed contributes: the product of the other axes' level counts
    p_holm: float = math.nan

    @property
    def mean_diff(self) -> float:
        return self.contrast.mean

    @property
    def half_width(self) -> float:
        return self.contrast.half_width

    @property
    def n_pairs(self) -> int:
        return self.contrast.n

    @property
    def p_value(self) -> float:
        return self.contrast.p

    @property
    def significant(self) -> bool:
        """Significant at 5% after the Holm correction over the metric's contrasts."""
        return not math.isnan(self.p_holm) and self.p_holm < ALPHA

    @property
    def mde80(self) -> float:
        """Smallest true difference the current pairs detect with 80% power (alpha 0.05 per test)."""
        return stats.min_detectable_difference(self.contrast.sd, self.n_pairs)

    @property
    def pairs_needed(self) -> float:
        """Pairs for 80% power at the observed difference (inf when it is 0)."""
        return stats.pairs_needed(self.mean_diff, self.contrast.sd)

    @property
    def seeds_needed(self) -> float:
        return stats.seeds_needed(self.mean_diff, self.contrast.sd, self.pairs_per_seed)

    def better(self) -> str:
        """The level with the better mean on this metric (lower FID, higher everything else)."""
        return self.a if (self.mean_diff < 0) == (METRICS.get(self.metric, "higher") == "lower") else self.b


def main_effects(runs: list[GridRun], axes: Mapping[str, Sequence] | Sequence[str], metric: str,
                 chosen: Mapping[str, str] | None = None) -> list[Effect]:
    """For each axis and pair of its levels (oriented by `oriented_pairs`): paired differences a − b over
    runs that share the other axes' values and the seed, a paired t-test, and Holm-adjusted p-values
    over all the returned contrasts (the family of one metric)."""
    levels = _axis_levels(axes, runs)
    chosen = chosen or {}
    out = []
    for axis, axis_levels in levels.items():
        others = [x for x in levels if x != axis]
        by_unit: dict[tuple, dict[str, float]] = defaultdict(dict)
        for r in runs:
            if metric in r.metrics:
                by_unit[tuple(r.axis(o) for o in others) + (r.seed,)][r.axis(axis)] = r.metrics[metric]
        pairs_per_seed = math.prod(len(levels[o]) for o in others)
        for a, b in oriented_pairs(axis_levels, chosen.get(axis)):
            pairs = [(v[a], v[b]) for _, v in sorted(by_unit.items()) if a in v and b in v]
            if not pairs:
                continue
            xa, xb = np.array(pairs).T
            out.append(Effect(axis, a, b, metric, stats.paired_contrast(xa, xb), pairs_per_seed))
    for e, p in zip(out, stats.holm([e.p_value for e in out])):
        e.p_holm = p
    return out


@dataclass
class Interaction:
    """(a − b under c) − (a − b under d): does the level of `by_axis` change the `axis` contrast?"""
    axis: str
    a: str
    b: str
    by_axis: str
    c: str
    d: str
    metric: str
    contrast: stats.Contrast
    p_holm: float = math.nan

    @property
    def significant(self) -> bool:
        return not math.isnan(self.p_holm) and self.p_holm < ALPHA


def interactions(runs: list[GridRun], axes: Mapping[str, Sequence] | Sequence[str], metric: str,
                 chosen: Mapping[str, str] | None = None) -> list[Interaction]:
    """For each pair of axes and each pair of contrasts of theirs, the difference of differences per
    unit (seed, and the values of any further axes), a one-sample t-test, and Holm-adjusted p-values
    over all the returned interactions (the family of one metric)."""
    levels = _axis_levels(axes, runs)
    chosen = chosen or {}
    out = []
    for x, y in itertools.combinations(levels, 2):
        others = [o for o in levels if o not in (x, y)]
        by_unit: dict[tuple, dict[tuple[str, str], float]] = defaultdict(dict)
        for r in runs:
            if metric in r.metrics:
                by_unit[tuple(r.axis(o) for o in others) + (r.seed,)][r.axis(x), r.axis(y)] = r.metrics[metric]
        for a, b in oriented_pairs(levels[x], chosen.get(x)):
            for c, d in oriented_pairs(levels[y], chosen.get(y)):
                need = [(a, c), (b, c), (a, d), (b, d)]
                units = [v for _, v in sorted(by_unit.items()) if all(k in v for k in need)]
                if not units:
                    continue
                a_c, b_c, a_d, b_d = np.array([[v[k] for k in need] for v in units]).T
                out.append(Interaction(x, a, b, y, c, d, metric, stats.interaction_contrast(a_c, b_c, a_d, b_d)))
    for i, p in zip(out, stats.holm([i.contrast.p for i in out])):
        i.p_holm = p
    return out


# ---------------------------------------------------------------- the whole analysis


@dataclass
class Analysis:
    """Everything the markdown and the JSON show, computed once."""
    p: Params
    grid: str
    runs: list[GridRun]
    axes: dict[str, list[str]]
    cells: list[str]  # present cells, in grid order
    seeds: list[int]  # expected seeds
    seeds_source: str
    missing: list[tuple[str, int]]
    extra: list[tuple[str, int]]  # runs of the grid outside the expected cells x seeds
    effects: dict[str, list[Effect]]
    interactions: dict[str, list[Interaction]]
    quick_fid: dict[int, dict[str, float]]  # step -> cell -> mean quick FID
    ranking: dict[int, list[str]]  # step -> cells, best first
    gamma_layers: list[str]


def _cell_label(axes: Mapping[str, Sequence], values: Sequence) -> str:
    return ",".join(f"{k}={v}" for k, v in zip(axes, values))  # as pipeline.grid and Params.grid_cell


def analyze(p: Params, grid: str, runs: list[GridRun], expected_seeds: Sequence[int] | None = None) -> Analysis:
    """The report's numbers. Expected seeds: `expected_seeds`, else params `ablation.seeds` for the
    params' own grid, else (another grid, e.g. a smoke run with its own --seeds) the seeds in the store."""
    axes = {a: [str(v) for v in levels] for a, levels in p.ablation.axes.items()}
    # worded as a regeneration from the store alone (no expected_seeds) words it, whenever it can be
    in_store = sorted({r.seed for r in runs})
    params_seeds = sorted(p.ablation.seeds)
    if grid == p.ablation.name and (expected_seeds is None or sorted(expected_seeds) == params_seeds):
        seeds, source = params_seeds, "params `ablation.seeds`"
    elif expected_seeds is not None and sorted(expected_seeds) != in_store:
        seeds, source = sorted(expected_seeds), "as given"
    else:
        seeds, source = in_store, f"the seeds found in the store for grid `{grid}`"
    expected_cells = [_cell_label(axes, combo) for combo in itertools.product(*axes.values())]
    found = {(r.cell, r.seed) for r in runs}
    expected = [(c, s) for c in expected_cells for s in seeds]
    present = {r.cell for r in runs}
    cells = [c for c in expected_cells if c in present] + sorted(present - set(expected_cells))
    flat = p.flat()
    chosen = {a: str(flat.get(a)) for a in axes}
    curves = {c: [dict(r.fid_curve) for r in runs if r.cell == c and r.fid_curve] for c in cells}
    quick_fid, ranking = stats.rank_per_budget({c: v for c, v in curves.items() if v})
    return Analysis(
        p=p, grid=grid, runs=runs, axes=axes, cells=cells, seeds=seeds, seeds_source=source,
        missing=[k for k in expected if k not in found], extra=sorted(found - set(expected)),
        effects={m: main_effects(runs, axes, m, chosen) for m in METRICS},
        interactions={m: interactions(runs, axes, m, chosen) for m in METRICS},
        quick_fid=quick_fid, ranking=ranking,
        gamma_layers=sorted({k for r in runs for k in r.gamma_curves}),
    )


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
    """The real-data floor (held-out vs training data) as the first run that has one logged it."""
    for r in runs:
        floor = {k.split(".", 1)[1]: v for k, v in r.metrics.items() if k.startswith("floor.")}
        if floor:
            return floor
    return {}


def _final_gamma(r: GridRun, layer: str) -> float | None:
    curve = r.gamma_curves.get(layer)
    return curve[-1][1] if curve else r.metrics.get(layer)
