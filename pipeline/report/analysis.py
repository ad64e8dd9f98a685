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
    equivalence: stats.Equivalence | None = None  # TOST against ±margin (ablation.margin.<metric>)
    p_tost_holm: float = math.nan  # Holm over the metric's equivalence tests, as p_holm over its difference tests
    improvement: stats.Improvement | None = None  # P(a better than b) over the pairs, bootstrap over seeds
    family_size: int = 1  # contrasts in the metric's Holm family

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
    def equivalent(self) -> bool:
        """Within ±margin: both one-sided tests reject after the Holm correction over the metric's contrasts."""
        return not math.isnan(self.p_tost_holm) and self.p_tost_holm < ALPHA

    @property
    def verdict(self) -> str:
        """better (a significant difference, after Holm), equivalent (TOST after Holm: the difference lies
        within ±margin), inconclusive (neither: more seeds could tell), or untestable (fewer than two
        pairs, or differences that do not vary)."""
        if self.n_pairs < 2 or (math.isnan(self.p_value) and math.isnan(self.p_tost)):
            return "untestable"
        if self.significant:
            return "better"
        if self.equivalent:
            return "equivalent"
        return "inconclusive"

    @property
    def mde80_holm(self) -> float:
        """The smallest true difference these pairs detect with 80% power at the strictest Holm level
        (alpha / the family's size): what an inconclusive contrast could have found."""
        return stats.min_detectable_difference(self.contrast.sd, self.n_pairs, alpha=ALPHA / max(1, self.family_size))

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
                 chosen: Mapping[str, str] | None = None, margin: float = math.nan) -> list[Effect]:
    """For each axis and pair of its levels (oriented by `oriented_pairs`): paired differences a − b over
    runs that share the other axes' values and the seed, a paired t-test, an equivalence test (TOST)
    against ±margin, the probability that a is better (bootstrap over seeds), and Holm-adjusted p-values
    of both tests over all the returned contrasts (the family of one metric)."""
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
            units = [(unit, v) for unit, v in sorted(by_unit.items()) if a in v and b in v]
            if not units:
                continue
            xa, xb = np.array([(v[a], v[b]) for _, v in units]).T
            seeds = [unit[-1] for unit, _ in units]
            out.append(Effect(axis, a, b, metric, stats.paired_contrast(xa, xb), pairs_per_seed,
                              equivalence=stats.tost_paired(xa - xb, margin),
                              improvement=stats.probability_of_improvement(
                                  xa, xb, METRICS.get(metric) == "lower", clusters=seeds)))
    for e, p, p_eq in zip(out, stats.holm([e.p_value for e in out]), stats.holm([e.p_tost for e in out])):
        e.p_holm, e.p_tost_holm, e.family_size = p, p_eq, len(out)
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
                out.append(Interaction(x, a, b, y, c, d, metric, stats.interaction_contrast(a_c, b_c, a_d, b_d),
                                       equivalence=stats.tost_paired((a_c - b_c) - (a_d - b_d), margin)))
    p_eq = [i.equivalence.p for i in out]
    for i, p, q in zip(out, stats.holm([i.contrast.p for i in out]), stats.holm(p_eq)):
        i.p_holm, i.p_tost_holm = p, q
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
    pilot: dict[str, list[Effect]] | None = None  # the same contrasts on the first PILOT_SEEDS seeds alone
    replications: dict[str, "Analysis"] = field(default_factory=dict)  # grid -> its analysis (write_report)

    @property
    def settled(self) -> "Settled":
        return budget_settled(self.ranking)

    def margin(self, metric: str) -> float:
        return getattr(self.p.ablation.margin, metric, math.nan)


PILOT_SEEDS = 3  # the grid's first seeds: the pilot whose paired SDs planned the rest


def _cell_label(axes: Mapping[str, Sequence], values: Sequence) -> str:
    return cell_label(axes, dict(zip(axes, values)))


def analyze(p: Params, grid: str, runs: list[GridRun], expected_seeds: Sequence[int] | None = None) -> Analysis:
    """The report's numbers. Expected seeds: `expected_seeds`, else params `ablation.seeds` for the
    params' own grid, else (another grid, e.g. a smoke run with its own --seeds) the seeds in the store."""
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
    flat = p.flat()
    chosen = {a: label_value(a, flat[a]) for a in axes}
    curves = {c: [dict(r.fid_curve) for r in runs if r.cell == c and r.fid_curve] for c in cells}
    quick_fid, ranking = stats.rank_per_budget({c: v for c, v in curves.items() if v})
    margins = {m: getattr(p.ablation.margin, m, math.nan) for m in METRICS}
    pilot_seeds = sorted({r.seed for r in runs})[:PILOT_SEEDS]
    pilot_runs = [r for r in runs if r.seed in pilot_seeds]
    return Analysis(
        p=p, grid=grid, runs=runs, axes=axes, cells=cells, seeds=seeds, seeds_source=source,
        missing=[k for k in expected if k not in found], extra=sorted(found - set(expected)),
        effects={m: main_effects(runs, axes, m, chosen, margins[m]) for m in METRICS},
        interactions={m: interactions(runs, axes, m, chosen, margins[m]) for m in METRICS},
        quick_fid=quick_fid, ranking=ranking,
        gamma_layers=sorted({k for r in runs for k in r.gamma_curves}),
        pilot=({m: main_effects(pilot_runs, axes, m, chosen, margins[m]) for m in METRICS}
               if len(pilot_runs) < len(runs) else None),
    )


# ---------------------------------------------------------------- is the budget long enough?


SETTLED_TAU = 0.9  # Kendall tau between the rankings at the last two budgets
SETTLED_SHARE = 0.4  # the best cell must be the same over this last share of training


@dataclass
class Settled:
    """Whether the final ranking (quick FID) had stopped moving when training ended."""
    known: bool
    tau_last_two: float = math.nan
    steps: tuple[int, int] | None = None  # the last two budgets
    best: str | None = None
    best_since: int | None = None  # the first budget from which the final best cell stays best
    first_checked: int | None = None  # the first budget in the last SETTLED_SHARE of training

    @property
    def settled(self) -> bool:
        return (self.known and self.tau_last_two >= SETTLED_TAU and self.best_since is not None
                and self.first_checked is not None and self.best_since <= self.first_checked)


def budget_settled(ranking: Mapping[int, Sequence[str]]) -> Settled:
    """τ between the rankings at the last two budgets ≥ SETTLED_TAU, and the final best cell best at every
    budget in the last SETTLED_SHARE of training. Unknown without two budgets (runs without curves)."""
    steps = sorted(ranking)
    if len(steps) < 2:
        return Settled(False)
    final = list(ranking[steps[-1]])
    tau = stats.kendall_tau(list(ranking[steps[-2]]), final)
    since = steps[-1]
    for s in reversed(steps[:-1]):
        if not ranking[s] or ranking[s][0] != final[0]:
            break
        since = s
    checked = [s for s in steps if s >= (1 - SETTLED_SHARE) * steps[-1]]
    return Settled(True, tau, (steps[-2], steps[-1]), final[0], since, checked[0])


# ---------------------------------------------------------------- replication


@dataclass
class Replicated:
    """One contrast in two grids (or two halves of one grid's seeds)."""
    first: Effect
    second: Effect

    @property
    def same_sign(self) -> bool:
        return bool(np.sign(self.first.mean_diff) == np.sign(self.second.mean_diff))

    @property
    def same_verdict(self) -> bool:
        if self.first.verdict != self.second.verdict:
            return False
        return self.first.verdict != "better" or self.first.better() == self.second.better()

    @property
    def replicates(self) -> bool:
        """Same sign and same verdict (for `better`, the same winner)."""
        return self.same_sign and self.same_verdict


def replicate(first: Mapping[str, list[Effect]], second: Mapping[str, list[Effect]]) -> list[Replicated]:
    """The contrasts that both analyses have, paired by metric, axis and levels, in the first's order."""
    index = {(e.metric, e.axis, e.a, e.b): e for m in second for e in second[m]}
    return [Replicated(e, index[e.metric, e.axis, e.a, e.b]) for m in first for e in first[m]
            if (e.metric, e.axis, e.a, e.b) in index]


def seed_halves(p: Params, runs: list[GridRun], axes: Mapping[str, Sequence]
                ) -> tuple[list[int], list[int], dict[str, list[Effect]], dict[str, list[Effect]]] | None:
    """The contrasts on the first and on the second half of the grid's seeds (sorted), each half judged on
    its own (Holm within it); None below 2 seeds a half."""
    seeds = sorted({r.seed for r in runs})
    if len(seeds) < 4:
        return None
    half = len(seeds) // 2
    flat = p.flat()
    chosen = {a: label_value(a, flat[a]) for a in axes}
    out = []
    for part in (seeds[:half], seeds[half:]):
        sub = [r for r in runs if r.seed in part]
        out.append({m: main_effects(sub, axes, m, chosen, getattr(p.ablation.margin, m, math.nan)) for m in METRICS})
    return seeds[:half], seeds[half:], out[0], out[1]


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
    pairs = [(r.metrics[metric], r.metrics[f"resample.{metric}"]) for r in runs
             if metric in r.metrics and f"resample.{metric}" in r.metrics]
    sampling = math.sqrt(sum((a - b) ** 2 for a, b in pairs) / (2 * len(pairs))) if pairs else math.nan
    by_cell: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        if metric in r.metrics:
            by_cell[r.cell].append(r.metrics[metric])
    ss = sum(float(np.sum((np.array(v) - np.mean(v)) ** 2)) for v in by_cell.values() if len(v) > 1)
    dof = sum(len(v) - 1 for v in by_cell.values() if len(v) > 1)
    return VarianceSplit(metric, len(pairs), sampling, math.sqrt(ss / dof) if dof else math.nan)
