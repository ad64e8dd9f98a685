"""The report's numbers: paired main effects and interactions (Holm-corrected per metric), the Analysis of a
grid computed once, and the environment, wall-time and real-data-floor facts of its runs."""
from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from pipeline import stats
from pipeline.config import Params, cell_label, label_value
from pipeline.provenance import BATCH_FIELDS, UNRECORDED, batch_key_of_tags
from pipeline.report.budget import (MIN_PLANNED_BUDGET, SCAN_METRICS, SCAN_SHARE, BudgetPoint, BudgetScan, ContrastScan,
                                    candidate_budgets, full_steps, runs_at, steps_of)
from pipeline.report.margins import MarginBand, ResolvedMargin, judge_family, margin_bands, resolve_margins
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


# ---------------------------------------------------------------- batches


def batch_key(r: GridRun) -> tuple[str, ...]:
    """What the runs of a pair must share (BATCH_FIELDS): machine class (CPU design and class, or GPU),
    device, precision, training code (training_code of its commit), metrics code version and evaluator
    checksum (pipeline.provenance)."""
    return batch_key_of_tags(r.tags)


@dataclass
class Batch:
    """Seeds whose runs share a batch_key; within a batch pairs are comparable. `mixed`: the key names
    more than one value of a field (seeds whose own runs differ): never the primary."""
    key: tuple[str, ...]
    seeds: list[int]
    runs: list[GridRun]
    complete: bool  # every seed has every expected cell
    newest_ms: int  # the latest run start (0 where no run recorded one)
    commits: list[str]
    mixed: bool = False
    effects: dict[str, list[Effect]] = field(default_factory=dict)
    interactions: dict[str, list["Interaction"]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"seeds {_seed_span(self.seeds)}"

    def describe(self) -> str:
        machine, device, precision, code, metrics, evaluator = self.key
        commits = ", ".join(c[:7] for c in self.commits) if self.commits else UNRECORDED
        return (f"{machine}; {device}, {precision}; training code {code} (commits {commits}); metrics code "
                f"{metrics if metrics == UNRECORDED else 'v' + metrics}; evaluator {evaluator}")


def _seed_span(seeds: Sequence[int]) -> str:
    s = sorted(seeds)
    if s and s == list(range(s[0], s[-1] + 1)) and len(s) > 2:
        return f"{s[0]}-{s[-1]}"
    return ", ".join(map(str, s))


def batches(runs: list[GridRun], cells: Sequence[str]) -> list[Batch]:
    """The runs grouped into batches by seed: a seed's key is its runs' batch_key (joined field by field
    where they differ, which marks the batch mixed). Oldest first (by newest run start)."""
    by_seed: dict[int, list[GridRun]] = defaultdict(list)
    for r in runs:
        by_seed[r.seed].append(r)
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    mixed: set[tuple[str, ...]] = set()
    for seed, seed_runs in sorted(by_seed.items()):
        keys = sorted({batch_key(r) for r in seed_runs})
        key = tuple(" + ".join(sorted({k[i] for k in keys})) for i in range(len(BATCH_FIELDS)))
        groups[key].append(seed)
        if len(keys) > 1:
            mixed.add(key)
    out = []
    for key, seeds in groups.items():
        rs = [r for s in seeds for r in by_seed[s]]
        complete = all({r.cell for r in by_seed[s]} >= set(cells) for s in seeds)
        newest = max((r.start_ms or 0) for r in rs)
        commits = sorted({r.tags["git.commit"] for r in rs if r.tags.get("git.commit")})
        out.append(Batch(key, seeds, rs, complete, newest, commits, key in mixed))
    return sorted(out, key=lambda b: (b.newest_ms, len(b.seeds), b.seeds))


def primary_batch(found: list[Batch]) -> Batch | None:
    """The batch the verdicts come from: the newest complete, unmixed batch of at least two seeds; else
    the unmixed batch with the most seeds (newest on a tie); else the newest of any."""
    if not found:
        return None
    ok = [b for b in found if b.complete and not b.mixed and len(b.seeds) >= 2]
    if ok:
        return max(ok, key=lambda b: (b.newest_ms, len(b.seeds)))
    unmixed = [b for b in found if not b.mixed]
    return max(unmixed or found, key=lambda b: (len(b.seeds), b.newest_ms))


# ---------------------------------------------------------------- the whole analysis


@dataclass
class Analysis:
    """Everything the markdown and the JSON show, computed once. `effects` and `interactions` are the
    primary batch's (the verdicts); the other batches, and the replicate_with grids, are replications."""
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
    quick_fid: dict[int, dict[str, float]]  # step -> cell -> mean quick FID (a picture: no verdict uses it)
    ranking: dict[int, list[str]]  # step -> cells, best first
    gamma_layers: list[str]
    batches: list[Batch] = field(default_factory=list)
    primary: Batch | None = None
    replications: dict[str, "Analysis"] = field(default_factory=dict)  # grid -> its analysis (write_report)
    budget_scan: "BudgetScan | None" = None  # the primary batch's effects per budget (pipeline.report.budget)
    read_at: int | None = None  # a replication grid's runs read at this checkpoint step (budget.runs_at_budget)

    # metric -> the absolute margin the verdicts use (pipeline.report.margins.resolve_margins: `ablation.margin`
    # resolved against the primary batch's reference cell, or a published grid's, given to analyze)
    margins: dict[str, ResolvedMargin] = field(default_factory=dict)
    # metric -> each contrast's verdict at every margin (pipeline.report.margins.margin_bands), effects' order
    bands: dict[str, list[MarginBand]] = field(default_factory=dict)

    def margin(self, metric: str) -> float:
        m = self.margins.get(metric)
        return m.value if m is not None else math.nan

    @property
    def primary_runs(self) -> list[GridRun]:
        return self.primary.runs if self.primary else self.runs

    def others(self) -> list[tuple[str, Batch]]:
        """The replications: (name, batch) for this grid's other batches and each replicate_with grid's
        primary batch."""
        out = [(f"`{self.grid}` {b.label}", b) for b in self.batches if b is not self.primary]
        out += [(f"`{g}` {o.primary.label}" + self._budget_note(o), o.primary)
                for g, o in self.replications.items() if o.primary]
        return out

    def _budget_note(self, other: Analysis) -> str:
        """A replication grid at another budget says which (a longer one is read at the primary's)."""
        if other.read_at:
            return f" read at step {other.read_at:,} (its full-size checkpoint evaluations)"
        own, theirs = budget_of(self.primary_runs), budget_of(other.primary_runs)
        return f" at {theirs:,} steps (the primary: {own:,})" if own and theirs and theirs != own else ""


def _cell_label(axes: Mapping[str, Sequence], values: Sequence) -> str:
    return cell_label(axes, dict(zip(axes, values)))


def chosen_levels(p: Params, axes: Mapping[str, Sequence]) -> dict[str, str]:
    """Each axis' level that params.yaml sets (the contrasts' orientation: oriented_pairs)."""
    flat = p.flat()
    return {a: label_value(a, flat[a]) for a in axes}


def reference_cell(p: Params, axes: Mapping[str, Sequence]) -> str:
    """The cell params.yaml itself sets (its own level of every axis): what a share margin is a share of."""
    chosen = chosen_levels(p, axes)
    return _cell_label(axes, [chosen[a] for a in axes])


def margins_of(p: Params, axes: Mapping[str, Sequence], runs: list[GridRun]) -> dict[str, ResolvedMargin]:
    """`ablation.margin` of every metric as absolute margins, resolved against `runs` (the primary batch's):
    their reference cell's means and their floor (pipeline.report.margins.resolve_margin)."""
    return resolve_margins(p, list(METRICS), reference_cell(p, axes), runs, floor_metrics(runs))


def _effects_of(p: Params, runs: list[GridRun], axes: Mapping[str, Sequence],
                margins: Mapping[str, float]) -> tuple[dict, dict]:
    chosen = chosen_levels(p, axes)
    margins = {m: margins.get(m, math.nan) for m in METRICS}
    effects = {m: main_effects(runs, axes, m, chosen, margins[m]) for m in METRICS}
    budget = budget_of(runs)
    for m, es in effects.items():
        for e in es:
            e.drift = contrast_drift(runs, axes, e, budget)
    return effects, {m: interactions(runs, axes, m, chosen, margins[m]) for m in METRICS}


def budget_of(runs: list[GridRun]) -> int:
    """The grid's budget: its runs' most common `train.steps` (0 where none has one)."""
    steps = _values(runs, steps_of).most_common(1)
    return steps[0][0] if steps else 0


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


def budget_scan(runs: Sequence[GridRun], axes: Mapping[str, Sequence[str]], chosen: Mapping[str, str],
                margins: Mapping[str, float], floor: int, metrics: Sequence[str] = SCAN_METRICS) -> BudgetScan | None:
    """The main effects of `metrics` at every candidate budget of `runs` (one batch's), with their drift
    over each budget's window; None with fewer than two candidate budgets (nothing to scan)."""
    budgets = candidate_budgets(full_steps(runs), share=SCAN_SHARE)
    if len(budgets) < 2:
        return None
    scans: dict[tuple, ContrastScan] = {}
    for budget in budgets:
        at = runs_at(runs, budget)
        for metric in metrics:
            for e in main_effects(at, axes, metric, chosen, margins.get(metric, math.nan)):
                e.drift = contrast_drift(at, axes, e, budget, share=SCAN_SHARE)
                key = (metric, e.axis, e.a, e.b)
                scan = scans.setdefault(key, ContrastScan(metric, e.axis, e.a, e.b, e.margin))
                scan.points.append(BudgetPoint(budget, e))
    return BudgetScan(budgets, list(scans.values()), floor)


NOT_MEASURED = "not measured (no full-size checkpoint evaluations in these records)"


def analyze(p: Params, grid: str, runs: list[GridRun], expected_seeds: Sequence[int] | None = None,
            margins: Mapping[str, ResolvedMargin] | None = None) -> Analysis:
    """The report's numbers. Expected seeds: `expected_seeds`, else params `ablation.seeds` for the
    params' own grid, else (another grid, e.g. a smoke run with its own --seeds) the seeds in the store.
    The runs are split into batches (`batches`); the verdicts come from the primary one. The margins:
    `margins` as given (a replication is judged at the published grid's), else `ablation.margin` resolved
    against this grid's primary batch (margins_of)."""

    axes = {a: [label_value(a, v) for v in levels] for a, levels in p.ablation.axes.items()}
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
    curves = {c: [dict(r.fid_curve) for r in runs if r.cell == c and r.fid_curve] for c in cells}
    quick_fid, ranking = stats.rank_per_budget({c: v for c, v in curves.items() if v})
    found_batches = batches(runs, expected_cells)
    primary = primary_batch(found_batches)
    resolved = dict(margins) if margins is not None else margins_of(p, axes, primary.runs if primary else runs)
    absolute = {m: r.value for m, r in resolved.items()}
    for b in found_batches:
        b.effects, b.interactions = _effects_of(p, b.runs, axes, absolute)
    effects, inter = (primary.effects, primary.interactions) if primary else _effects_of(p, runs, axes, absolute)
    scan = budget_scan(primary.runs if primary else runs, axes, chosen_levels(p, axes), absolute,
                       floor=max(MIN_PLANNED_BUDGET, p.train.steps))
    return Analysis(
        p=p, grid=grid, runs=runs, axes=axes, cells=cells, seeds=seeds, seeds_source=source,
        missing=[k for k in expected if k not in found], extra=sorted(found - set(expected)),
        effects=effects, interactions=inter, quick_fid=quick_fid, ranking=ranking,
        gamma_layers=sorted({k for r in runs for k in r.gamma_curves}),
        batches=found_batches, primary=primary, budget_scan=scan, margins=resolved,
        bands={m: margin_bands(es) for m, es in effects.items()},
    )


# ---------------------------------------------------------------- replication


@dataclass
class Replication:
    """One contrast in the primary batch and in another batch (or grid). It agrees when its estimate lies
    in the primary's prediction interval for a batch of its size (stats.replication_interval), not when
    its verdict matches (a small batch is inconclusive by construction). Heterogeneity: Welch's t on the
    two batches' per-seed values (stats.heterogeneity). Pooled (all seeds of both, the seed the unit)
    only where the two agree and no heterogeneity is found."""
    primary: Effect
    other: Effect

    @property
    def interval(self) -> tuple[float, float]:
        return stats.replication_interval(self.primary.per_seed, self.other.n_seeds)

    @property
    def agrees(self) -> bool | None:
        """None where the primary cannot give an interval (a contrast of fewer than 2 seeds)."""
        lo, hi = self.interval
        if math.isnan(lo) or math.isnan(hi) or math.isnan(self.other.mean_diff):
            return None
        return bool(lo <= self.other.mean_diff <= hi)

    @property
    def p_heterogeneity(self) -> float:
        return stats.heterogeneity(self.primary.per_seed, self.other.per_seed)

    @property
    def heterogeneous(self) -> bool:
        return self.p_heterogeneity < ALPHA

    @property
    def pooled(self) -> stats.Contrast | None:
        if not self.agrees or self.heterogeneous or math.isnan(self.p_heterogeneity):
            return None
        return stats.one_sample_contrast([*self.primary.per_seed, *self.other.per_seed])


def replicate(first: Mapping[str, list[Effect]], second: Mapping[str, list[Effect]]) -> list[Replication]:
    """The contrasts that both have, paired by metric, axis and levels, in the first's order."""
    index = {(e.metric, e.axis, e.a, e.b): e for m in second for e in second[m]}
    return [Replication(e, index[e.metric, e.axis, e.a, e.b]) for m in first for e in first[m]
            if (e.metric, e.axis, e.a, e.b) in index]


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



# ---------------------------------------------------------------- which variance is it?


@dataclass
class VarianceSplit:
    """A metric's spread between a cell's training seeds against the spread of one generator's samples."""
    metric: str
    n_resampled: int  # runs with a second sampling seed (pipeline.resample)
    sampling_sd: float  # SD of the metric over latent seeds, one generator: sqrt(mean((x1 - x2)^2) / 2)
    seed_sd: float  # pooled SD within cells over training seeds (first draws; sampling noise included)
    source: str = "resample"  # "resample": a second draw of each generator; "se": each run's own standard error

    @property
    def training_sd(self) -> float:
        """The seed-to-seed SD with the sampling part taken out (0 where sampling explains all of it)."""
        if not (math.isfinite(self.seed_sd) and math.isfinite(self.sampling_sd)):
            return math.nan
        return math.sqrt(max(0.0, self.seed_sd ** 2 - self.sampling_sd ** 2))

    @property
    def ratio(self) -> float:
        return self.seed_sd / self.sampling_sd if self.sampling_sd > 0 else math.nan


def variance_split(runs: list[GridRun], metric: str) -> VarianceSplit:
    """The sampling SD from a second draw of each generator (pipeline.resample) where runs have one, else from
    the runs' own standard errors (metrics version 3: `<metric>_se` of the mean over evaluate.draws draws; their
    root mean square), so that it is the noise of the metric as the runs report it."""
    pairs = [(r.metrics[metric], r.metrics[f"resample.{metric}"]) for r in runs
             if metric in r.metrics and f"resample.{metric}" in r.metrics]
    sampling = math.sqrt(sum((a - b) ** 2 for a, b in pairs) / (2 * len(pairs))) if pairs else math.nan
    source = "resample"
    ses = [r.metrics[f"{metric}_se"] for r in runs if math.isfinite(r.metrics.get(f"{metric}_se", math.nan))]
    if not pairs and ses:
        pairs, sampling, source = ses, math.sqrt(float(np.mean(np.square(ses)))), "se"
    by_cell: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        if metric in r.metrics:
            by_cell[r.cell].append(r.metrics[metric])
    ss = sum(float(np.sum((np.array(v) - np.mean(v)) ** 2)) for v in by_cell.values() if len(v) > 1)
    dof = sum(len(v) - 1 for v in by_cell.values() if len(v) > 1)
    return VarianceSplit(metric, len(pairs), sampling, math.sqrt(ss / dof) if dof else math.nan, source)
