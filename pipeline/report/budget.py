"""Where each contrast settles: the main effects again at every budget that the runs' full-size checkpoint
evaluations cover, each with the drift test over that budget's own window (its last 40%: the pilot's rule).

A step's draws depend only on (seed, step) and no schedule depends on the total steps, so a run's full-size
evaluation at step k is what a k-step run would have scored: one run gives every budget up to its own. A
pilot at twice the planned budget therefore shows, per contrast, from which budget on its drift stays inside
±margin/2, and the published grid's budget is read off it before the grid runs (issue 29, docs/grid.md).

The scan itself (budget_scan) reuses the report's main effects and drift test (pipeline.report.contrasts) on
`runs_at(budget)`; budget_of is a grid's own budget.

The plan's rule (written before the pilot ran): the planned budget is the smallest candidate budget, no
smaller than `floor` (10,000 steps or the default run's, whichever is more), at which every FID and
classifier-score contrast's mean per-seed drift lies within ±margin/2 and stays there at every larger
candidate. A pilot's few seeds rarely show that by TOST, so the point estimate decides; the TOST (the
grid's own "settled" test) is shown beside it.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

from pipeline import stats
from pipeline.report.contrasts import Effect, contrast_drift, main_effects
from pipeline.report.runs import GridRun

# the pilot's rule, stated before grid18k ran: each budget's drift over its last 40% (the grid's own settled
# test reads the last half: stats.DRIFT_SHARE)
SCAN_SHARE = 0.4

SCAN_METRICS = ("fid", "classifier_score")
MIN_PLANNED_BUDGET = 10_000  # issue 29: the published grid runs no fewer steps than this


@dataclass
class BudgetPoint:
    """One contrast at one budget: its main effect from the full-size evaluations at that step (Effect,
    with .drift over the window [0.6 · budget, budget])."""
    budget: int
    effect: Effect

    @property
    def drift(self) -> stats.Drift | None:
        return self.effect.drift

    @property
    def within(self) -> bool | None:
        """The mean per-seed drift lies within ±margin/2 (None: no drift measured)."""
        d = self.drift
        if d is None or d.drift is None or not math.isfinite(d.drift.mean) or not self.effect.margin > 0:
            return None
        return abs(d.drift.mean) <= self.effect.margin / 2

    @property
    def settled(self) -> bool | None:
        """The drift TOST (the grid's "settled"): shown within ±margin/2 at 5%."""
        return self.drift.settled if self.drift is not None else None


@dataclass
class ContrastScan:
    metric: str
    axis: str
    a: str
    b: str
    margin: float
    points: list[BudgetPoint] = field(default_factory=list)  # by budget, ascending

    @property
    def label(self) -> str:
        return f"{self.a} − {self.b}"

    @property
    def settles_at(self) -> int | None:
        """The smallest budget from which the drift is within ±margin/2 at it and every larger budget."""
        found = None
        for point in reversed(self.points):
            if not point.within:
                break
            found = point.budget
        return found


@dataclass
class BudgetScan:
    budgets: list[int]  # candidate budgets: >= stats.DRIFT_MIN_POINTS common checkpoints in each one's window
    contrasts: list[ContrastScan]
    floor: int  # the smallest budget the plan may choose

    @property
    def planned(self) -> int | None:
        """The plan's rule (module docstring): the smallest candidate >= floor from which every contrast's
        drift is within ±margin/2; None when no candidate qualifies (or a contrast never settles)."""
        starts = [c.settles_at for c in self.contrasts]
        if not starts or any(s is None for s in starts):
            return None
        qualifying = [b for b in self.budgets if b >= max(max(starts), self.floor)]
        return qualifying[0] if qualifying else None


def full_steps(runs: Sequence[GridRun], metric: str = "fid") -> list[int]:
    """The checkpoints at which every run has a full-size evaluation of `metric`."""
    if not runs:
        return []
    common = set.intersection(*[{int(s) for s, _ in r.metric_curves.get(metric, [])} for r in runs])
    return sorted(common)


def candidate_budgets(steps: Sequence[int], share: float = SCAN_SHARE,
                      min_points: int = stats.DRIFT_MIN_POINTS) -> list[int]:
    """The checkpoints whose drift window (the last `share` of that budget) holds >= min_points checkpoints."""
    return [b for b in steps if sum((1 - share) * b <= s <= b for s in steps) >= min_points]


def runs_at(runs: Sequence[GridRun], budget: int) -> list[GridRun]:
    """Each run as a `budget`-step run: its metrics are its full-size evaluations at that step (evaluator A's;
    the real-data floor, which no generator changes, is kept; the rest belongs to its last step and goes),
    its checkpoint curves end there, its train.steps is `budget` and the tag `budget.read_at` says so."""
    out = []
    for r in runs:
        curves = {m: [(s, v) for s, v in c if s <= budget] for m, c in r.metric_curves.items()}
        metrics = {k: v for k, v in r.metrics.items() if k.startswith("floor.")}
        metrics |= {m: c[-1][1] for m, c in curves.items() if c and c[-1][0] == budget}
        out.append(replace(r, metrics=metrics, metric_curves=curves, params={**r.params, "train.steps": str(budget)},
                           tags={**r.tags, "budget.read_at": str(budget),
                                 "budget.run_steps": r.params.get("train.steps", "?")}))
    return out


def steps_of(r: GridRun) -> int:
    """The run's budget (its `train.steps` param); 0 where it has none."""
    try:
        return int(float(r.params.get("train.steps", 0)))
    except (TypeError, ValueError):
        return 0


def runs_at_budget(runs: Sequence[GridRun], budget: int) -> list[GridRun] | None:
    """A longer grid's runs read at `budget` (runs_at) when every one of them has a full-size evaluation
    there and some ran longer; None otherwise (the runs are then compared at their own budget)."""
    if not runs or budget <= 0 or all(steps_of(r) <= budget for r in runs) or budget not in full_steps(runs):
        return None
    return runs_at(runs, budget)


def budget_of(runs: list[GridRun]) -> int:
    """The grid's budget: its runs' most common `train.steps` (0 where none has one)."""
    steps = Counter(steps_of(r) for r in runs).most_common(1)
    return steps[0][0] if steps else 0


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
