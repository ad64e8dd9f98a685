"""The ablation report, built from the grid's MLflow runs alone (so it regenerates from the store).

Writes `ablation.md`, `ablation.json` (the same numbers, machine-readable) and `ablation_files/`
(plots, sample images). The published grid (params `ablation.name`) goes to `reports/`; any other grid
(e.g. CI's `smoke`) to `reports/<name>/`, so it never replaces the published report.

The statistics (pipeline/stats.py), in the report's words:
- per cell: mean ± 95% t-interval over seeds;
- per axis, every pair of levels as a paired contrast "a − b": runs paired when they share the seed and
  the other axes' values, paired t-test, Holm correction over all contrasts of one metric, a verdict only
  where Holm allows one, and for the rest the smallest difference the seeds could have detected;
- per pair of axes, the interaction (difference of differences), tested and Holm-corrected the same way;
- the ranking of cells by quick FID at each training budget, and the attention gammas over training.

Orientation of "a − b": b is `none` when one level is (what the option adds over leaving it out);
otherwise a is the level params.yaml sets (the pipeline's choice against the alternative); otherwise a is
the level listed first in `ablation.axes`. With the default params: post − none, pre − none, post − pre,
hinge − bce.

ablation.json: floats are plain numbers, nan and inf are null; `ci95` is [low, high]; an environment
value is a string when all runs agree and a list of the distinct values when they do not.
"""
from __future__ import annotations

import itertools
import logging
import math
import re
import shutil
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pipeline import stats, tracking
from pipeline.config import Params
from pipeline.fileio import atomic_dir, write_json, write_text
from pipeline.stats import t_interval  # also imported from here by callers

log = logging.getLogger("report")

REPORT_DIR = Path("reports")
METRICS = {"fid": "lower", "classifier_score": "higher", "precision": "higher", "recall": "higher"}
CELL_METRICS = {**METRICS, "density": "higher", "coverage": "higher"}  # the per-cell table only
ANSWER_METRICS = {"fid": "FID", "classifier_score": "classifier score"}
ALPHA = stats.ALPHA
MAX_BUDGET_COLUMNS = 6


@dataclass
class GridRun:
    run_id: str
    cell: str
    seed: int
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    fid_curve: list[tuple[int, float]] = field(default_factory=list)
    gamma_curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # "gamma.g14" -> curve
    start_ms: int | None = None
    end_ms: int | None = None

    def axis(self, key: str) -> str:
        return self.params.get(key, "?")


def load_runs(p: Params, grid: str) -> list[GridRun]:
    """The latest finished, evaluated run of each cell x seed of `grid`, with its quick-FID and gamma
    histories."""
    import mlflow

    exp_id = tracking.setup(p.mlflow.experiment)
    client = mlflow.MlflowClient(tracking.tracking_uri())
    found = client.search_runs([exp_id], f"tags.`grid.name` = '{grid}' and attributes.status = 'FINISHED'",
                               max_results=5000, order_by=["attributes.start_time DESC"])
    runs: dict[tuple[str, int], GridRun] = {}
    for r in found:
        key = (r.data.tags.get("grid.cell", ""), int(r.data.tags.get("grid.seed", -1)))
        if "fid" not in r.data.metrics or key in runs:
            continue

        def history(metric: str) -> list[tuple[int, float]]:
            return sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, metric))

        gammas = {k: history(k) for k in sorted(r.data.metrics) if k.startswith("gamma.")}
        runs[key] = GridRun(r.info.run_id, key[0], key[1], dict(r.data.metrics), dict(r.data.params),
                            dict(r.data.tags), history("fid_quick"), gammas, r.info.start_time, r.info.end_time)
    return sorted(runs.values(), key=lambda g: (g.cell, g.seed))


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
    if expected_seeds is not None:
        seeds, source = sorted(expected_seeds), "as given"
    elif grid == p.ablation.name:
        seeds, source = sorted(p.ablation.seeds), "params `ablation.seeds`"
    else:
        seeds, source = sorted({r.seed for r in runs}), f"the seeds found in the store for grid `{grid}`"
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


def _agreed(counts: Counter) -> Any:
    """The value when all runs agree, else the sorted distinct values (for the JSON)."""
    values = sorted(counts, key=str)
    return values[0] if len(values) == 1 else values


def _shown(counts: Counter, width: int | None = None) -> str:
    """'value', or 'v1 (12 runs), v2 (6 runs)' when runs disagree; a missing value shows as '?'."""
    def one(v: Any) -> str:
        s = "?" if v in (None, "") else str(v)
        return s[:width] if width and s != "?" else s

    if len(counts) == 1:
        return one(next(iter(counts)))
    return ", ".join(f"{one(v)} ({n} runs)" for v, n in counts.most_common())


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


# ---------------------------------------------------------------- formatting


def _num(x: float | None) -> str:
    """3 decimals; 3 significant digits where 3 decimals would show a nonzero value as 0.000."""
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:.3g}" if 0 < abs(x) < 0.0005 else f"{x:.3f}"


def _fmt(mean: float, hw: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{_num(mean)} ± {_num(hw)}" if not math.isnan(hw) else f"{_num(mean)} (n=1)"


def _signed(x: float) -> str:
    return _num(x) if not math.isfinite(x) or x < 0 else "+" + _num(x)


def _p(p: float) -> str:
    return "–" if math.isnan(p) else f"{p:.3g}"


def _ci(c: stats.Contrast) -> str:
    lo, hi = c.ci95
    return "no interval" if math.isnan(lo) else f"95% CI {_num(lo)} to {_num(hi)}"


def _duration(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {s % 60:.0f} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def _short(cell: str) -> str:
    return " / ".join(part.split("=", 1)[1] for part in cell.split(",") if "=" in part) or cell


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", s)


def _verdict(e: Effect) -> str:
    if math.isnan(e.p_value) and e.n_pairs >= 2:
        return "no variation across pairs: no test"  # ttest_rel is undefined when all pairs differ alike
    if math.isnan(e.p_value):
        return "too few pairs to test"
    if e.significant:
        return f"significant at 5% after Holm: {e.better()} is better"
    if e.p_value < ALPHA:
        return "not significant at 5% after Holm (p < 0.05 before the correction)"
    return "not significant at 5%"


def _needed(e: Effect) -> str:
    pairs, seeds = e.pairs_needed, e.seeds_needed
    if math.isnan(pairs):
        return "–"
    if math.isinf(pairs):
        return "none: the observed difference is 0" if e.mean_diff == 0 else "more than 10⁹ pairs"
    return f"{pairs:,.0f} pairs = {seeds:,.0f} seeds per cell"


# ---------------------------------------------------------------- plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mean_curve(curves: list[list[tuple[int, float]]]) -> tuple[list[int], list[float]]:
    by_step: dict[int, list[float]] = defaultdict(list)
    for curve in curves:
        for step, value in curve:
            by_step[step].append(value)
    steps = sorted(by_step)
    return steps, [float(np.mean(by_step[s])) for s in steps]


def _plots(a: Analysis, out: Path) -> list[str]:
    plt = _plt()
    runs, cells = a.runs, a.cells
    color = {c: f"C{i % 10}" for i, c in enumerate(cells)}  # one colour per cell in every plot
    names = []
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6))
    for ax, metric in zip(axes, METRICS):
        per_cell = [[r.metrics[metric] for r in runs if r.cell == c and metric in r.metrics] for c in cells]
        stats_ = [t_interval(v) for v in per_cell]
        errs = [0 if math.isnan(s[1]) else s[1] for s in stats_]
        ax.errorbar(range(len(cells)), [s[0] for s in stats_], yerr=errs, fmt="o", capsize=4)
        for i, ys in enumerate(per_cell):
            ax.scatter([i] * len(ys), ys, s=8, color="gray", alpha=0.6)
        ax.set_xticks(range(len(cells)))
        ax.set_xticklabels([_short(c) for c in cells], rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{metric} ({METRICS[metric]} is better)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "metrics.png", dpi=90)
    plt.close(fig)
    names.append("metrics.png")

    if a.ranking:
        fig, (ax_fid, ax_rank) = plt.subplots(1, 2, figsize=(11, 4))
        for c in cells:
            steps = [s for s in a.quick_fid if c in a.quick_fid[s]]
            if not steps:
                continue
            ax_fid.plot(steps, [a.quick_fid[s][c] for s in steps], marker="o", color=color[c], label=_short(c))
            ax_rank.plot(steps, [a.ranking[s].index(c) + 1 for s in steps], marker="o", color=color[c])
        ax_fid.set_xlabel("training step")
        ax_fid.set_ylabel("quick FID (mean over seeds)")
        ax_fid.legend(fontsize=7)
        ax_rank.set_xlabel("training step (budget)")
        ax_rank.set_ylabel("rank by quick FID (1 = best)")
        ax_rank.invert_yaxis()
        ax_rank.set_yticks(range(1, len(cells) + 1))
        fig.tight_layout()
        fig.savefig(out / "ranking_over_budget.png", dpi=90)
        plt.close(fig)
        names.append("ranking_over_budget.png")

    if a.gamma_layers:
        fig, axes = plt.subplots(1, len(a.gamma_layers), figsize=(4.5 * len(a.gamma_layers), 3.6), squeeze=False)
        for ax, layer in zip(axes[0], a.gamma_layers):
            for c in cells:
                curves = [r.gamma_curves[layer] for r in runs if r.cell == c and r.gamma_curves.get(layer)]
                if curves:
                    ax.plot(*_mean_curve(curves), color=color[c], label=_short(c))
            ax.axhline(0, color="gray", lw=0.5)
            ax.set_title(f"{layer} (mean over seeds)", fontsize=9)
            ax.set_xlabel("training step")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "gamma_over_training.png", dpi=90)
        plt.close(fig)
        names.append("gamma_over_training.png")
    return names


# ---------------------------------------------------------------- markdown


def _answer(a: Analysis) -> list[str]:
    """3-5 plain sentences: the budget, each axis' effect on FID and classifier score, interactions."""
    steps = _shown(_values(a.runs, _param("train.steps")))
    n_expected = len(a.runs) + len(a.missing)
    lines = [f"At {steps} generator steps with {len(a.seeds)} seeds per cell ({len(a.runs)} of {n_expected} "
             f"runs{', the grid is incomplete' if a.missing else ''}), a difference is called significant only "
             f"after a Holm correction over all contrasts of its metric."]
    for axis in a.axes:
        by_pair: dict[tuple[str, str], list[str]] = defaultdict(list)
        for metric, name in ANSWER_METRICS.items():
            for e in (e for e in a.effects[metric] if e.axis == axis):
                if math.isnan(e.p_value):
                    sig = "not testable"
                else:
                    sig = ("significant" if e.significant else "not significant") + f", Holm p = {_p(e.p_holm)}"
                by_pair[e.a, e.b].append(f"{name} {_signed(e.mean_diff)} ({_ci(e.contrast)}, {sig})")
        if by_pair:
            lines.append(f"**{axis}**: " + "; ".join(f"{a_} − {b_} changes {', '.join(parts)}"
                                                     for (a_, b_), parts in by_pair.items()) + ".")
    inter = [i for m in ANSWER_METRICS for i in a.interactions[m]]
    if inter:
        sig = [i for i in inter if i.significant]
        if sig:
            lines.append("Significant interactions after Holm: " + "; ".join(
                f"({i.a} − {i.b}) changes by {i.contrast.mean:+.3f} on {ANSWER_METRICS[i.metric]} between "
                f"{i.by_axis} {i.c} and {i.d} ({_ci(i.contrast)})" for i in sig) + ".")
        else:
            lines.append(f"No interaction ({', '.join(dict.fromkeys(f'{i.axis} × {i.by_axis}' for i in inter))}) "
                         f"is significant after Holm for FID or classifier score.")
    return lines


def _header(a: Analysis) -> list[str]:
    env = environment(a.runs)
    wall = wall_times(a.runs)
    floor = floor_metrics(a.runs)
    n_walls = sum("final.wall_s" in r.metrics for r in a.runs)
    budget = (f"{_shown(_values(a.runs, _param('train.steps')))} generator steps, batch "
              f"{_shown(_values(a.runs, _param('train.batch_size')))}, "
              f"{_shown(_values(a.runs, _param('evaluate.n_samples')))} samples evaluated")
    if a.missing:
        missing = (f"**incomplete: {len(a.missing)} of {len(a.missing) + len(a.runs) - len(a.extra)} runs missing**: "
                   + "; ".join(f"{c} seed {s}" for c, s in a.missing))
    else:
        missing = "complete: every cell has every expected seed"
    lines = [
        "| setting | value |", "| --- | --- |",
        f"| grid | `{a.grid}`: {' × '.join(f'{ax} ({len(v)})' for ax, v in a.axes.items())} × seeds "
        f"{', '.join(str(s) for s in a.seeds)} ({a.seeds_source}) |",
        f"| completeness | {missing} |",
    ]
    if a.extra:
        lines.append("| runs outside the expected grid | " + "; ".join(f"{c} seed {s}" for c, s in a.extra) + " |")
    lines += [
        f"| budget | {budget} |",
        f"| machine | cpu: {_shown(env['machine_cpu'])}; gpu: {_shown(env['machine_gpu'])} |",
        f"| device | {_shown(env['device'])} ({_shown(env['precision'])}) |",
        f"| versions | torch {_shown(env['torch'])}, dvc {_shown(_values(a.runs, _tag('version.dvc')))}, "
        f"mlflow {_shown(_values(a.runs, _tag('version.mlflow')))}, python {_shown(_values(a.runs, _tag('python')))} |",
        f"| commit | `{_shown(env['commit'], 12)}` |",
        f"| evaluator checksum | `{_shown(env['evaluator_sha256'], 12)}` (sha256, first 12 characters) |",
        f"| data | {_shown(env['data_source'])} (sha256 `{_shown(env['data_sha256'], 12)}`) |",
        "| real-data floor (held-out vs training) | "
        + (", ".join(f"{m} {_num(floor[m])}" for m in CELL_METRICS if m in floor) or "?") + " |",
        f"| grid wall time | {_duration(wall['grid_span'])} (first run start to last run end) |",
        f"| summed run wall time | {_duration(wall['sum_of_runs'])} (final.wall_s of {n_walls} runs) |",
        "",
    ]
    return lines


def _cell_table(a: Analysis) -> list[str]:
    runs, cells = a.runs, a.cells
    floor = floor_metrics(runs)
    lines = ["## Metrics per cell (mean ± 95% t-interval over seeds)", "",
             "| cell | n | " + " | ".join(f"{m} ({CELL_METRICS[m]} better)" for m in CELL_METRICS) + " |",
             "| --- | --- | " + " | ".join("---" for _ in CELL_METRICS) + " |"]
    best = {}
    for c in cells:
        row = [t_interval([r.metrics[m] for r in runs if r.cell == c and m in r.metrics]) for m in CELL_METRICS]
        n = sum(r.cell == c for r in runs)
        lines.append(f"| {c} | {n} | " + " | ".join(_fmt(s[0], s[1]) for s in row) + " |")
        for m, s in zip(METRICS, row):
            sign = 1 if METRICS[m] == "lower" else -1
            if not math.isnan(s[0]) and (m not in best or sign * s[0] < sign * best[m][1]):
                best[m] = (c, s[0])
    lines.append("| real data (floor: held-out vs training) | – | " +
                 " | ".join(_num(floor.get(m)) for m in CELL_METRICS) + " |")
    lines += ["", "Best configuration by mean: " +
              "; ".join(f"**{m}**: {best[m][0]}" for m in METRICS if m in best) + ".", ""]
    return lines


def _effects_section(a: Analysis) -> list[str]:
    lines = ["## Main effects (paired differences, paired t-test, Holm-corrected)", "",
             "Each difference pairs two runs that share the seed and the values of the other axes. "
             "“a − b” is a's value minus b's: `none` is always subtracted, otherwise the level params.yaml "
             "sets comes first. The Holm correction runs over the family of all contrasts of one metric "
             f"(every axis, every pair of levels); a verdict of “significant” needs a Holm p below {ALPHA}.", "",
             "| axis | comparison | metric | mean difference ± 95% CI | pairs | p-value | Holm p-value | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in METRICS:
        for e in a.effects[m]:
            lines.append(f"| {e.axis} | {e.a} − {e.b} | {m} | {_fmt(e.mean_diff, e.half_width)} | {e.n_pairs} | "
                         f"{_p(e.p_value)} | {_p(e.p_holm)} | {_verdict(e)} |")
    if not any(a.effects.values()):
        lines.append("| – | no axis has two levels with paired runs | – | – | – | – | – | – |")
    return lines + [""]


def _interaction_section(a: Analysis) -> list[str]:
    rows = [i for m in METRICS for i in a.interactions[m]]
    if not rows:
        return ["## Interactions", "", "No pair of axes has two levels each with paired runs: no interaction "
                "to estimate.", ""]
    lines = ["## Interactions (does one axis change another's effect?)", "",
             "Per seed (and value of any further axis): (a − b under c) − (a − b under d), the difference of "
             "differences; 0 means the a − b effect is the same under c and d. One-sample t-test against 0, "
             "Holm-corrected over the interactions of one metric.", "",
             "| effect | changed by | metric | difference of differences ± 95% CI | units | p-value | Holm p-value "
             "| verdict |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for i in rows:
        if math.isnan(i.contrast.p):
            verdict = "no test"
        elif i.significant:
            verdict = f"significant at 5% after Holm: the {i.axis} effect depends on {i.by_axis}"
        else:
            verdict = "not significant at 5%" + (" after Holm" if i.contrast.p < ALPHA else "")
        lines.append(f"| {i.axis}: {i.a} − {i.b} | {i.by_axis}: {i.c} vs {i.d} | {i.metric} | "
                     f"{_fmt(i.contrast.mean, i.contrast.half_width)} | {i.contrast.n} | {_p(i.contrast.p)} | "
                     f"{_p(i.p_holm)} | {verdict} |")
    return lines + [""]


def _power_section(a: Analysis) -> list[str]:
    rows = [e for m in METRICS for e in a.effects[m] if not e.significant and e.n_pairs >= 2]
    lines = ["## Power of the contrasts that are not significant", ""]
    if not rows:
        return lines + ["Every testable contrast is significant after Holm.", ""]
    lines += ["What the current seeds could have detected: the smallest true difference a two-sided paired "
              "t-test (α = 0.05) finds with 80% power given the observed SD of the paired differences, and "
              "the pairs (and seeds per cell) needed for 80% power at the observed difference. Exact "
              "noncentral-t power, per test: the Holm correction makes the real requirement larger, and the "
              "observed difference is itself uncertain, so treat these as planning numbers.", "",
              "| metric | comparison | observed difference | SD of differences | pairs | detectable at 80% power "
              "| needed for the observed difference |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for e in rows:
        lines.append(f"| {e.metric} | {e.axis}: {e.a} − {e.b} | {_num(e.mean_diff)} | {_num(e.contrast.sd)} | "
                     f"{e.n_pairs} | {'–' if math.isnan(e.mde80) else '±' + _num(e.mde80)} | {_needed(e)} |")
    return lines + [""]


def _budget_steps(steps: list[int]) -> list[int]:
    """All budgets, or MAX_BUDGET_COLUMNS of them evenly spaced, always with the last."""
    if len(steps) <= MAX_BUDGET_COLUMNS:
        return steps
    idx = np.linspace(0, len(steps) - 1, MAX_BUDGET_COLUMNS).round().astype(int)
    return [steps[i] for i in sorted(set(idx))]


def ranking_sentence(ranking: dict[int, list[str]]) -> str:
    """Whether the final budget's ranking (quick FID) already holds at the earlier budgets."""
    steps = sorted(ranking)
    if len(steps) < 2:
        return "Only one budget was evaluated: no earlier ranking to compare."
    final = ranking[steps[-1]]

    def same(s: int) -> bool:
        shared = [c for c in ranking[s] if c in final]
        return shared == [c for c in final if c in shared]

    holds = [s for s in steps[:-1] if same(s)]
    since = steps[-1]
    for s in reversed(steps[:-1]):
        if not same(s):
            break
        since = s
    best_at = [s for s in steps[:-1] if ranking[s] and ranking[s][0] == final[0]]
    if len(holds) == len(steps) - 1:
        head = f"The final-budget ranking (step {steps[-1]}) holds at every earlier budget"
    elif since < steps[-1]:
        head = (f"The final-budget ranking (step {steps[-1]}) holds from step {since} on; it differs at step(s) "
                f"{', '.join(str(s) for s in steps[:-1] if not same(s))}")
    else:
        head = f"The final-budget ranking (step {steps[-1]}) holds at no earlier budget"
    tail = (f"its best cell, {_short(final[0])}, is best at " +
            ("every earlier budget" if len(best_at) == len(steps) - 1 else
             f"step(s) {', '.join(map(str, best_at))} of the earlier ones" if best_at else "no earlier budget"))
    return f"{head}; {tail}."


def _ranking_section(a: Analysis) -> list[str]:
    lines = ["## Ranking over the training budget (quick FID)", ""]
    if not a.ranking:
        return lines + ["No quick-FID history (train.eval_every 0?): no ranking over budgets.", ""]
    steps = _budget_steps(sorted(a.ranking))
    final = a.ranking[max(a.ranking)]
    eval_n = _shown(_values(a.runs, _param("train.eval_n")))
    lines += [f"Mean quick FID over seeds (on {eval_n} samples, noisier than the final FID) and the rank "
              "among cells (#1 = lowest) at each budget. " + ranking_sentence(a.ranking), "",
              "| cell | " + " | ".join(f"step {s}" for s in steps) + " |",
              "| --- | " + " | ".join("---" for _ in steps) + " |"]
    for c in a.cells:
        row = [f"{_num(a.quick_fid[s][c])} (#{a.ranking[s].index(c) + 1})" if c in a.quick_fid[s] else "–"
               for s in steps]
        lines.append(f"| {c} | " + " | ".join(row) + " |")
    lines.append("| Kendall τ with the final ranking | " +
                 " | ".join(_num(stats.kendall_tau(a.ranking[s], final)) for s in steps) + " |")
    return lines + [""]


def _gamma_section(a: Analysis) -> list[str]:
    lines = ["## Attention usage (learned gamma of each attention layer)", ""]
    if not a.gamma_layers:
        return lines + ["No gamma histories in these runs (no attention layers, or not logged).", ""]
    lines += ["An attention layer adds gamma × attention to its input; gamma starts at "
              f"{_shown(_values(a.runs, _param('attention.gamma_init')))}, so how far it moves says how much the "
              "network uses the layer. Final gamma per layer, mean ± 95% t-interval over seeds:", "",
              "| cell | " + " | ".join(a.gamma_layers) + " |",
              "| --- | " + " | ".join("---" for _ in a.gamma_layers) + " |"]
    for c in a.cells:
        finals = {layer: [g for r in a.runs if r.cell == c and (g := _final_gamma(r, layer)) is not None]
                  for layer in a.gamma_layers}
        if any(finals.values()):
            lines.append(f"| {c} | " + " | ".join(_fmt(*t_interval(v)[:2]) for v in finals.values()) + " |")
    return lines + ["", "![gamma_over_training.png](ablation_files/gamma_over_training.png)", ""]


def _samples(a: Analysis, out: Path, client) -> list[str]:
    lines = ["## Samples and attention of each cell's median-seed run (by FID)", ""]
    if client is None:
        return lines + ["Sample images not included (rendered without an MLflow store).", ""]
    for c in a.cells:
        med = _median_run([r for r in a.runs if r.cell == c])
        lines += [f"### {c}", "", f"seed {med.seed}, FID {_num(med.metrics['fid'])}, run `{med.run_id}`", ""]
        for art in ("grid.png", "attention.png"):
            try:
                local = client.download_artifacts(med.run_id, f"samples/{art}", str(out))
            except Exception:  # noqa: BLE001 - a run without attention (position none) has no map
                continue
            target = out / f"{_slug(c)}-{art}"
            Path(local).replace(target)
            lines.append(f"![{c} {art}](ablation_files/{target.name})")
        lines.append("")
    shutil.rmtree(out / "samples", ignore_errors=True)  # download_artifacts' folder, now empty
    return lines


def _median_run(runs: list[GridRun]) -> GridRun:
    ordered = sorted(runs, key=lambda r: r.metrics["fid"])
    return ordered[(len(ordered) - 1) // 2]


def render_analysis(a: Analysis, out: Path, client=None) -> str:
    """The markdown of `a`; plots (and, with an MLflow client, sample images) are written to `out`,
    which the markdown links as ablation_files/ (relative to the markdown file)."""
    lines = [f"# Ablation report: grid `{a.grid}`", ""]
    if not a.runs:
        return "\n".join(lines + [
            f"No finished runs of grid `{a.grid}` in the MLflow store ({tracking.tracking_uri()}).", "",
            "Run the grid first: `make grid` (or `python -m pipeline.grid run`)."]) + "\n"
    lines += [f"Built from {len(a.runs)} MLflow runs (experiment `{a.p.mlflow.experiment}`, tag "
              f"`grid.name = {a.grid}`); regenerate with `python -m stages.report` or "
              f"`python -m pipeline.report --grid {a.grid}`.", "",
              "## Answer", ""] + [f"- {s}" for s in _answer(a)] + ["", "## Setup", ""]
    lines += _header(a)
    lines += _cell_table(a)
    lines += _effects_section(a)
    lines += _interaction_section(a)
    lines += _power_section(a)
    plots = _plots(a, out)
    lines += _ranking_section(a)
    if "ranking_over_budget.png" in plots:
        lines += ["![ranking_over_budget.png](ablation_files/ranking_over_budget.png)", ""]
    lines += _gamma_section(a)
    lines += ["## Metrics per cell, every run", "", "![metrics.png](ablation_files/metrics.png)", ""]
    lines += _samples(a, out, client)
    return "\n".join(lines) + "\n"


def render(p: Params, grid: str, runs: list[GridRun], out: Path, client=None,
           expected_seeds: Sequence[int] | None = None) -> str:
    """The markdown report of `runs`; see render_analysis."""
    return render_analysis(analyze(p, grid, runs, expected_seeds), out, client)


# ---------------------------------------------------------------- JSON


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
    """ablation.json: the report's numbers, machine-readable (see the module docstring)."""
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


# ---------------------------------------------------------------- writing


def report_dir(p: Params, grid: str, out_dir: Path = REPORT_DIR) -> Path:
    """reports/ for the params' grid (the published report), reports/<grid>/ for any other."""
    return out_dir if grid == p.ablation.name else out_dir / _slug(grid)


def write_report(p: Params, grid: str | None = None, out_dir: Path = REPORT_DIR,
                 expected_seeds: Sequence[int] | None = None) -> Path:
    """Writes ablation.md, ablation.json and ablation_files/ of `grid` (default: ablation.name) into
    report_dir(...) and returns the markdown's path. An existing report is kept when the store has no
    run of the grid (a fresh clone's `dvc repro` must not replace the published report with an empty one)."""
    import mlflow

    grid = grid or p.ablation.name
    target = report_dir(p, grid, Path(out_dir))
    md = target / "ablation.md"
    runs = load_runs(p, grid)
    if not runs and md.exists():
        log.warning("no finished runs of grid %r in the MLflow store %s: kept the existing %s. To regenerate "
                    "it, run the grid (`make grid`) or point MLFLOW_TRACKING_URI at the store that produced it.",
                    grid, tracking.tracking_uri(), md)
        return md
    analysis = analyze(p, grid, runs, expected_seeds)
    client = mlflow.MlflowClient(tracking.tracking_uri())
    target.mkdir(parents=True, exist_ok=True)
    with atomic_dir(target / "ablation_files") as files:
        text = render_analysis(analysis, files, client)
    write_json(target / "ablation.json", summary(analysis))
    write_text(md, text)
    log.info("wrote %s from %d runs", md, len(runs))
    return md


def main(argv: list[str] | None = None) -> int:
    import argparse

    from pipeline.config import load_params
    from pipeline.errors import USER_ERRORS

    logging.basicConfig(level=logging.INFO, format="%(asctime)s report: %(message)s", datefmt="%H:%M:%S")
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.report",
        description="Write the ablation report (ablation.md, ablation.json, ablation_files/) of a grid from "
                    "its finished runs in the MLflow store (MLFLOW_TRACKING_URI, default sqlite:///mlflow.db "
                    "at the repository root). The grid of params.yaml `ablation.name` is published to "
                    "reports/, any other grid to reports/<name>/.")
    ap.add_argument("--grid", help="grid name, as the runs' tag grid.name (default: params ablation.name)")
    ap.add_argument("--seeds", type=int, nargs="+",
                    help="seeds the grid should have, for the list of missing runs (default: params "
                         "ablation.seeds for the params' grid, the seeds in the store for another grid)")
    args = ap.parse_args(argv)
    try:
        write_report(load_params(), args.grid, expected_seeds=args.seeds)
    except USER_ERRORS as e:
        print(f"error (report): {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
