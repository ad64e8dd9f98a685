"""The Analysis of a grid, computed once: its cells, seeds and missing runs, its batches and the primary one
(pipeline.report.batching), the primary batch's main effects and interactions at the resolved margins
(pipeline.report.contrasts, pipeline.report.margins), the budget scan (pipeline.report.budget), the quick-FID
ranking and the attention layers. analyze() ties them together; the markdown and ablation.json show it."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from pipeline import stats
from pipeline.config import Params, cell_label, label_value
from pipeline.report.batching import Batch, batches, primary_batch
from pipeline.report.budget import MIN_PLANNED_BUDGET, BudgetScan, budget_of, budget_scan
from pipeline.report.contrasts import METRICS, Effect, Interaction, contrast_drift, interactions, main_effects
from pipeline.report.run_facts import floor_metrics
from pipeline.report.margins import MarginBand, ResolvedMargin, margin_bands, resolve_margins
from pipeline.report.runs import GridRun

# budget_of: also imported from here (pipeline.report.write)
__all__ = ["Analysis", "analyze", "budget_of", "chosen_levels", "margins_of", "reference_cell"]


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


def analyze(p: Params, grid: str, runs: list[GridRun], expected_seeds: Sequence[int] | None = None,
            margins: Mapping[str, ResolvedMargin] | None = None) -> Analysis:
    """The report's numbers. Expected seeds: `expected_seeds`, else params `ablation.seeds` for the
    params' own grid, else (another grid, e.g. a smoke run with its own --seeds) the seeds of its records.
    The runs are split into batches (`batches`); the verdicts come from the primary one. The margins:
    `margins` as given (a replication is judged at the published grid's), else `ablation.margin` resolved
    against this grid's primary batch (margins_of)."""

    axes = {a: [label_value(a, v) for v in levels] for a, levels in p.ablation.axes.items()}
    # worded as a regeneration from the records alone (no expected_seeds) words it, whenever it can be
    recorded = sorted({r.seed for r in runs})
    params_seeds = sorted(p.ablation.seeds)
    if grid == p.ablation.name and (expected_seeds is None or sorted(expected_seeds) == params_seeds):
        seeds, source = params_seeds, "params `ablation.seeds`"
    elif expected_seeds is not None and sorted(expected_seeds) != recorded:
        seeds, source = sorted(expected_seeds), "as given"
    else:
        seeds, source = recorded, f"the seeds of the run records of grid `{grid}`"
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
