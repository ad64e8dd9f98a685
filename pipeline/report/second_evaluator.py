"""Do the verdicts hold under a second evaluator? Each main-effect contrast of the primary batch on FID and
classifier score, computed again from evaluator B's figures of the same samples (MLflow `evaluator_b.fid`,
`evaluator_b.classifier_score`: the evaluate stage scores every run with both evaluators) through the same
code path as evaluator A's (contrasts.main_effects: the seed as the unit, Holm over each metric's contrasts,
Lakens' four outcomes), beside A's verdict.

A verdict holds under both when B gives the same outcome and, for a difference that matters, the same better
level. B's FID is a distance in other features (another network, another feature size), so A's FID margin
means nothing in B's units: B's margin is A's scaled by the ratio of the two real-data floors (the same
multiple of its own floor). The classifier score is on one scale (1 to 10 classes' worth) under both: the
same margin."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace

from pipeline.report.analysis import Analysis, chosen_levels
from pipeline.report.contrasts import Effect, main_effects
from pipeline.report.run_facts import floor_metrics
from pipeline.report.runs import GridRun

PREFIX = "evaluator_b."  # its metrics in a run (evaluator_b.fid, evaluator_b.floor.fid, ...) and its tags
CHECKED = {"fid": "FID", "classifier_score": "classifier score"}  # the answer's metrics
NOT_MEASURED_B = "not measured (these records predate the second evaluator)"


def b_floor(runs: list[GridRun]) -> dict[str, float]:
    """Evaluator B's real-data floor, as the first run that logged one logged it (as floor_metrics for A)."""
    for r in runs:
        floor = {k[len(PREFIX + "floor."):]: v for k, v in r.metrics.items() if k.startswith(PREFIX + "floor.")}
        if floor:
            return floor
    return {}


def b_view(r: GridRun) -> GridRun:
    """The run as evaluator B scored it: its evaluator_b.<metric> figures under the plain names."""
    return replace(r, metrics={m: r.metrics[PREFIX + m] for m in CHECKED if PREFIX + m in r.metrics})


@dataclass
class Check:
    """One contrast under evaluator A (the report's verdict) and under evaluator B (None: B's runs do not
    give this contrast)."""
    a: Effect
    b: Effect | None

    @property
    def holds(self) -> bool | None:
        """Same outcome under both, and for a difference that matters the same better level; None without B."""
        if self.b is None:
            return None
        if self.a.verdict != self.b.verdict:
            return False
        return self.a.verdict != "matters" or self.a.better() == self.b.better()


@dataclass
class SecondEvaluator:
    runs: int  # the primary batch's runs
    runs_with_b: int  # of them, those with evaluator B's figures
    margins: dict[str, float] = field(default_factory=dict)  # B's, per metric
    floor_a: dict[str, float] = field(default_factory=dict)
    floor_b: dict[str, float] = field(default_factory=dict)
    checksums: Counter = field(default_factory=Counter)  # evaluator_b.sha256 of the runs with B
    archs: Counter = field(default_factory=Counter)
    checks: list[Check] = field(default_factory=list)

    @property
    def measured(self) -> bool:
        return self.runs_with_b > 0


def b_margins(a: Analysis, floor_a: dict[str, float], floor_b: dict[str, float]) -> dict[str, float]:
    """B's margin per metric: FID's scaled by B's floor over A's (A's own where either floor is missing)."""
    out = {m: a.margin(m) for m in CHECKED}
    if floor_a.get("fid") and floor_b.get("fid"):
        out["fid"] = a.margin("fid") * floor_b["fid"] / floor_a["fid"]
    return out


def second_evaluator(a: Analysis) -> SecondEvaluator:
    """The primary batch's contrasts under both evaluators (nothing measured where no run has B's figures)."""
    runs = a.primary_runs
    with_b = [r for r in runs if any(PREFIX + m in r.metrics for m in CHECKED)]
    out = SecondEvaluator(len(runs), len(with_b))
    if not with_b:
        return out
    out.floor_a, out.floor_b = floor_metrics(runs), b_floor(with_b)
    out.margins = b_margins(a, out.floor_a, out.floor_b)
    out.checksums = Counter(r.tags.get(PREFIX + "sha256") for r in with_b)
    out.archs = Counter(r.tags.get(PREFIX + "arch") for r in with_b)
    views, chosen = [b_view(r) for r in with_b], chosen_levels(a.p, a.axes)
    for m in CHECKED:
        under_b = {(e.axis, e.a, e.b): e for e in main_effects(views, a.axes, m, chosen, out.margins[m])}
        out.checks += [Check(e, under_b.get((e.axis, e.a, e.b))) for e in a.effects.get(m, [])]
    return out
