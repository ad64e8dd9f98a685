"""The contrasts and their tests: each axis' pairs of levels oriented "a − b" (oriented_pairs), the paired main
effects with the seed as the unit (Effect, main_effects: t-test, TOST against ±margin, Holm over one metric's
family, Lakens' four outcomes), the interactions of two axes (Interaction, interactions), and whether a
contrast had settled when training stopped (contrast_drift over full-size checkpoint evaluations)."""
from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from pipeline import stats
from pipeline.config import label_value
from pipeline.metrics.registry import COMPARED, IN_CELLS
from pipeline.report.margins import judge_family
from pipeline.report.runs import GridRun

METRICS = COMPARED  # the contrasts' metrics and which way is better (pipeline/metrics/registry.py)
CELL_METRICS = IN_CELLS  # and the per-cell table's
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
        return {a: [label_value(a, v) for v in levels] for a, levels in axes.items()}
    return {a: sorted({r.axis(a) for r in runs}) for a in axes}


VERDICTS = ("matters", "too small to matter", "unclear size", "equivalent", "inconclusive", "untestable")


@dataclass
class Effect:
    """A paired contrast a − b of one axis on one metric, with the seed as the unit: each seed gives one
    value, the mean of its pairs (the runs that share the seed and the other axes' values)."""
    axis: str
    a: str
    b: str
    metric: str
    contrast: stats.Contrast  # over the per-seed values: n = seeds, df = seeds − 1
    pairs_per_seed: int  # pairs a complete seed contributes: the product of the other axes' level counts
    p_holm: float = math.nan
    equivalence: stats.Equivalence | None = None  # TOST of the per-seed values against ±margin
    p_tost_holm: float = math.nan  # Holm over the metric's equivalence tests, as p_holm over its difference tests
    improvement: stats.Improvement | None = None  # P(a better than b) over seeds, bootstrap over seeds
    family_size: int = 1  # contrasts in the metric's Holm family
    seeds: list = field(default_factory=list)
    per_seed: list[float] = field(default_factory=list)  # the seed values, in `seeds` order
    n_pairs: int = 0  # the pairs behind them
    holm_ci: stats.Interval | None = None  # stats.holm_intervals: excludes 0 <=> significant after Holm
    level_means: tuple[float, float] = (math.nan, math.nan)  # mean of a's runs, of b's runs (paired ones)
    drift: stats.Drift | None = None  # stats.drift_tost over full-size checkpoint evaluations

    @property
    def margin(self) -> float:
        return self.equivalence.margin if self.equivalence else math.nan

    @property
    def p_tost(self) -> float:
        return self.equivalence.p if self.equivalence else math.nan

    @property
    def mean_diff(self) -> float:
        return self.contrast.mean

    @property
    def half_width(self) -> float:
        return self.contrast.half_width

    @property
    def n_seeds(self) -> int:
        return self.contrast.n

    @property
    def p_value(self) -> float:
        return self.contrast.p

    @property
    def significant(self) -> bool:
        """Significant at 5% after the Holm correction over the metric's contrasts."""
        return not math.isnan(self.p_holm) and self.p_holm < ALPHA

    @property
    def equivalent(self) -> bool:
        """Within ±margin: both one-sided tests reject after the Holm correction over the metric's contrasts."""
        return not math.isnan(self.p_tost_holm) and self.p_tost_holm < ALPHA

    @property
    def verdict(self) -> str:
        """Lakens' four outcomes of a difference test and an equivalence test (TOST against ±margin), both
        Holm-corrected over the metric's contrasts:
        - `matters`: significant, and the estimate is at least the margin: a difference that matters;
        - `too small to matter`: significant, and TOST shows it within ±margin;
        - `unclear size`: significant, the estimate inside ±margin but TOST cannot show it there (a split of
          Lakens' "different" cell: an effect inside the margin is never called a difference that matters);
        - `equivalent`: not significant, and TOST shows it within ±margin;
        - `inconclusive`: neither (with the difference the seeds could have detected: mde80_holm);
        - `untestable`: fewer than two seeds, or seed values that do not vary."""
        if self.n_seeds < 2 or (math.isnan(self.p_value) and math.isnan(self.p_tost)):
            return "untestable"
        if self.significant:
            if self.equivalent:
                return "too small to matter"
            return "matters" if not abs(self.mean_diff) < self.margin else "unclear size"
        if self.equivalent:
            return "equivalent"
        return "inconclusive"

    @property
    def mde80_holm(self) -> float:
        """The smallest true difference these seeds detect with 80% power at the strictest Holm level
        (alpha / the family's size): what an inconclusive contrast could have found."""
        return stats.min_detectable_difference(self.contrast.sd, self.n_seeds, alpha=ALPHA / max(1, self.family_size))

    @property
    def mde80(self) -> float:
        """Smallest true difference the current seeds detect with 80% power (alpha 0.05 per test)."""
        return stats.min_detectable_difference(self.contrast.sd, self.n_seeds)

    @property
    def seeds_needed(self) -> float:
        """Seeds for 80% power at the observed difference, per test (inf when it is 0)."""
        return stats.pairs_needed(self.mean_diff, self.contrast.sd)

    def better(self) -> str:
        """The level with the better mean on this metric (lower FID, higher everything else)."""
        return self.a if (self.mean_diff < 0) == (METRICS.get(self.metric, "higher") == "lower") else self.b

    def gap_share(self, floor: float) -> float:
        """The effect as a share of b's gap to the real-data floor: +0.1 = a closes 10% of the distance
        from b's mean to the floor (negative: a widens it). nan without a floor or a gap."""
        gap = self.level_means[1] - floor
        return -self.mean_diff / gap if math.isfinite(gap) and gap != 0 else math.nan


def _seed_contrast(diffs: Sequence[float], seeds: Sequence) -> tuple[list, np.ndarray, stats.Contrast]:
    order, values = stats.seed_values(diffs, seeds)
    return order, values, stats.one_sample_contrast(values)


def main_effects(runs: list[GridRun], axes: Mapping[str, Sequence] | Sequence[str], metric: str,
                 chosen: Mapping[str, str] | None = None, margin: float = math.nan) -> list[Effect]:
    """For each axis and pair of its levels (oriented by `oriented_pairs`): paired differences a − b over
    runs that share the other axes' values and the seed, averaged per seed (the seed is the unit: its pairs
    share its data order and start), a t-test over the seed values (n = seeds, df = seeds − 1), an
    equivalence test (TOST) against ±margin, the probability that a is better (over seeds, bootstrap over
    seeds), Holm-adjusted p-values of both tests over all the returned contrasts (the family of one metric)
    and the Holm-consistent intervals (stats.holm_intervals)."""
    levels = _axis_levels(axes, runs)
    chosen = chosen or {}
    lower = METRICS.get(metric) == "lower"
    out = []
    for axis, axis_levels in levels.items():
        others = [x for x in levels if x != axis]
        by_unit: dict[tuple, dict[str, float]] = defaultdict(dict)
        for r in runs:
            if metric in r.metrics:
                by_unit[tuple(r.axis(o) for o in others) + (r.seed,)][r.axis(axis)] = r.metrics[metric]
        pairs_per_seed = math.prod(len(levels[o]) for o in others)
        for a, b in oriented_pairs(axis_levels, chosen.get(axis)):
            units = [(unit, v) for unit, v in sorted(by_unit.items()) if a in v and b in v]
            if not units:
                continue
            xa, xb = np.array([(v[a], v[b]) for _, v in units]).T
            seeds, values, contrast = _seed_contrast(xa - xb, [unit[-1] for unit, _ in units])
            # P(a better) per seed: a seed's value against 0 (sign of the mean of its pairs)
            poi = stats.probability_of_improvement(values, np.zeros(len(values)), lower, clusters=seeds)
            out.append(Effect(axis, a, b, metric, contrast, pairs_per_seed, improvement=poi,
                              seeds=list(seeds), per_seed=[float(v) for v in values], n_pairs=len(units),
                              level_means=(float(xa.mean()), float(xb.mean()))))
    return judge_family(out, margin)


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
    equivalence: stats.Equivalence | None = None  # the difference of differences within ±margin (TOST)
    p_tost_holm: float = math.nan

    @property
    def significant(self) -> bool:
        return not math.isnan(self.p_holm) and self.p_holm < ALPHA

    @property
    def verdict(self) -> str:
        """interacts (significant after Holm), no interaction (equivalent: within ±margin after Holm),
        inconclusive, or untestable."""
        p_eq = self.equivalence.p if self.equivalence else math.nan
        if self.contrast.n < 2 or (math.isnan(self.contrast.p) and math.isnan(p_eq)):
            return "untestable"
        if self.significant:
            return "interacts"
        if not math.isnan(self.p_tost_holm) and self.p_tost_holm < ALPHA:
            return "no interaction"
        return "inconclusive"


def interactions(runs: list[GridRun], axes: Mapping[str, Sequence] | Sequence[str], metric: str,
                 chosen: Mapping[str, str] | None = None, margin: float = math.nan) -> list[Interaction]:
    """For each pair of axes and each pair of contrasts of theirs, the difference of differences per
    unit (seed, and the values of any further axes), averaged per seed (the seed is the unit), a one-sample
    t-test over the seeds, and Holm-adjusted p-values over all the returned interactions (the family of one
    metric)."""
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
                keys = [u for u, v in sorted(by_unit.items()) if all(k in v for k in need)]
                a_c, b_c, a_d, b_d = np.array([[v[k] for k in need] for v in units]).T
                _, values, contrast = _seed_contrast((a_c - b_c) - (a_d - b_d), [u[-1] for u in keys])
                out.append(Interaction(x, a, b, y, c, d, metric, contrast,
                                       equivalence=stats.tost_paired(values, margin)))
    p_eq = [i.equivalence.p for i in out]
    for i, p, q in zip(out, stats.holm([i.contrast.p for i in out]), stats.holm(p_eq)):
        i.p_holm, i.p_tost_holm = p, q
    return out


# ---------------------------------------------------------------- settled


NOT_MEASURED = "not measured (no full-size checkpoint evaluations in these records)"


def contrast_drift(runs: list[GridRun], axes: Mapping[str, Sequence], e: Effect, budget: int,
                   share: float = stats.DRIFT_SHARE) -> stats.Drift:
    """stats.drift_tost of an effect over its runs' full-size checkpoint evaluations (GridRun.metric_curves,
    not the quick FID): per seed and checkpoint, the mean of its pairs' a − b."""
    others = [x for x in axes if x != e.axis]
    at: dict[tuple, dict[int, float]] = defaultdict(dict)
    for r in runs:
        if r.axis(e.axis) in (e.a, e.b):
            for step, value in r.metric_curves.get(e.metric, []):
                at[tuple(r.axis(o) for o in others) + (r.seed, r.axis(e.axis))][int(step)] = value
    per_seed: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for key, curve in at.items():
        if key[-1] != e.a:
            continue
        other = at.get(key[:-1] + (e.b,), {})
        for step in curve.keys() & other.keys():
            per_seed[key[-2]][step].append(curve[step] - other[step])
    return stats.drift_tost({s: {k: float(np.mean(v)) for k, v in c.items()} for s, c in per_seed.items()},
                            budget, e.margin, share=share)
