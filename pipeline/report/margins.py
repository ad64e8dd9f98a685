"""The margin, two ways.

The verdict at every margin (`MarginBand`, `margin_bands`): a contrast's four-outcome verdict (Effect.verdict)
depends on the margin m only through two thresholds. Significance does not depend on m (Holm over the metric's
difference tests); equivalence (TOST against ±m, Holm over the metric's equivalence tests, every one at the same
m) is monotone in m: shown from some m_eq on. So a significant contrast is a difference that matters for
m <= |estimate|, of unclear size for |estimate| < m < m_eq, too small to matter for m >= m_eq; a
non-significant one is inconclusive for m < m_eq and equivalent for m >= m_eq. m_eq is found by bisection,
the whole family tested again at each m through judge_family, the code main_effects ends in, so a
band and Effect.verdict at the same margin cannot disagree. The band also keeps the near end of the Holm
interval: a significant contrast is a difference for anyone whose margin is at most that.

A margin in the units of the question (`resolve_margins`): `ablation.margin.<metric>` is a plain number
(absolute) or a share (config.ShareMargin) of the reference cell's value (`cell`) or of its gap to the
real-data floor (`gap`). The reference cell is the one params.yaml sets (analysis.reference_cell), its mean over
the primary batch's seeds; each resolved margin says what it came from. `as_recorded`: whether the grid's runs
started with these margins (their params' `ablation.*`)."""
from __future__ import annotations

import dataclasses
import math
import typing
from collections import Counter
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from pipeline import stats
from pipeline.config import Margin, Params, ShareMargin, label_value
from pipeline.report.runs import GridRun

# contrasts.Effect: not imported, contrasts imports this module (its main_effects ends in judge_family)
Effect = typing.Any

REL_TOL = 1e-9  # m_eq to this relative precision


# ---------------------------------------------------------------- the verdict at every margin


def judge_family(family: list[Effect], margin: float) -> list[Effect]:
    """The tests of one metric's family of contrasts at ±margin, in place: each contrast's TOST against ±margin
    (over its per-seed values), Holm over the family's difference tests and over its equivalence tests, the
    Holm-consistent intervals. contrasts.main_effects ends here, and at_margin tests a family again at other
    margins through it, so the verdict at any margin is the one Effect.verdict gives."""
    for e in family:
        e.equivalence = stats.tost_paired(e.per_seed, margin)
    intervals = stats.holm_intervals([e.contrast for e in family])
    for e, p, p_eq, ci in zip(family, stats.holm([e.p_value for e in family]),
                              stats.holm([e.p_tost for e in family]), intervals):
        e.p_holm, e.p_tost_holm, e.family_size, e.holm_ci = p, p_eq, len(family), ci
    return family


def at_margin(family: Sequence[Effect], margin: float) -> list[Effect]:
    """Copies of one metric's family of contrasts tested again at ±margin (judge_family, the code
    main_effects ends in): their verdicts are the ones main_effects would give at that margin."""
    return judge_family([dataclasses.replace(e) for e in family], margin)


@dataclass(frozen=True)
class MarginBand:
    """One contrast's verdict as a function of the margin m (module docstring)."""
    metric: str
    axis: str
    a: str
    b: str
    estimate: float  # the mean difference a − b
    holm_ci: tuple[float, float]  # the Holm interval (m-independent)
    significant: bool
    testable: bool  # two seeds or more whose values vary: otherwise untestable at every margin
    equivalent_from: float  # m_eq: equivalence (Holm) shown for m >= it; inf where no margin shows it

    @property
    def label(self) -> str:
        return f"{self.a} − {self.b}"

    @property
    def near(self) -> float:
        """A significant contrast's Holm interval's end nearest 0: a difference for any margin at most this;
        nan for a non-significant one."""
        lo, hi = self.holm_ci
        return min(abs(lo), abs(hi)) if self.significant and math.isfinite(lo) and math.isfinite(hi) else math.nan

    @property
    def matters_up_to(self) -> float:
        """A difference that matters for m <= this (|estimate|); nan where not significant."""
        return abs(self.estimate) if self.significant else math.nan

    def verdict_at(self, m: float) -> str:
        """Effect.verdict at margin m, from the thresholds alone."""
        if not self.testable:
            return "untestable"
        equivalent = m >= self.equivalent_from
        if self.significant:
            if equivalent:
                return "too small to matter"
            return "matters" if not abs(self.estimate) < m else "unclear size"
        return "equivalent" if equivalent else "inconclusive"

    def bands(self, upto: float) -> list[tuple[float, float, str]]:
        """(from, to, verdict) over margins (0, upto]: the verdict on each stretch."""
        if not self.testable:
            return [(0.0, upto, "untestable")]
        cuts = [0.0] + [c for c in (self.matters_up_to, self.equivalent_from) if 0 < c < upto] + [upto]
        cuts = sorted(set(cuts))
        out = []
        for lo, hi in zip(cuts, cuts[1:]):
            v = self.verdict_at((lo + hi) / 2)
            if out and out[-1][2] == v:
                out[-1] = (out[-1][0], hi, v)
            else:
                out.append((lo, hi, v))
        return out


def _equivalent_from(family: Sequence[Effect], i: int) -> float:
    """The smallest margin at which family[i] is shown equivalent (Holm over the family at that margin), by
    bisection to REL_TOL: the upper end of the last bracket, a margin that shows it. inf where none does."""
    e = family[i]

    def shown(m: float) -> bool:
        return at_margin(family, m)[i].equivalent

    lo = abs(e.mean_diff)  # TOST cannot show |mean| < m at m = |mean| (its one-sided p there is 0.5)
    hi = max(2 * lo, e.contrast.sd if math.isfinite(e.contrast.sd) else 0.0, 1e-12)
    for _ in range(200):
        if shown(hi):
            break
        lo, hi = hi, hi * 2
    else:
        return math.inf
    while hi - lo > REL_TOL * hi:
        mid = (lo + hi) / 2
        if shown(mid):
            hi = mid
        else:
            lo = mid
    return hi


def margin_bands(family: Sequence[Effect]) -> list[MarginBand]:
    """Each contrast of one metric's family (main_effects' output) as a MarginBand, in the family's order."""
    out = []
    for i, e in enumerate(family):
        testable = e.n_seeds >= 2 and math.isfinite(e.p_value)
        ci = (e.holm_ci.lo, e.holm_ci.hi) if e.holm_ci else (math.nan, math.nan)
        out.append(MarginBand(e.metric, e.axis, e.a, e.b, e.mean_diff, ci, e.significant, testable,
                              _equivalent_from(family, i) if testable else math.nan))
    return out


# ---------------------------------------------------------------- margins in the units of the question


@dataclass(frozen=True)
class ResolvedMargin:
    """`ablation.margin.<metric>` as the absolute margin the verdicts use, and what it came from."""
    metric: str
    spec: Margin  # as configured: a number (absolute) or a ShareMargin
    value: float  # the absolute margin (nan where a share has nothing to be a share of)
    reference_cell: str = ""  # for a share: the cell it is a share of
    reference_value: float = math.nan  # that cell's mean over the primary batch's seeds
    floor: float = math.nan  # for `gap`: the real-data floor

    @property
    def relative(self) -> bool:
        return isinstance(self.spec, ShareMargin)

    @property
    def configured(self) -> str:
        """The configured value as params.yaml spells it."""
        if isinstance(self.spec, ShareMargin):
            return f"{{share: {self.spec.share:g}, of: {self.spec.of}}}"
        return f"{self.spec:g}"

    def how(self) -> str:
        """In words: `absolute` or the share and what of."""
        if not isinstance(self.spec, ShareMargin):
            return "absolute"
        cell = self.reference_cell or "the reference cell"
        if self.spec.of == "cell":
            return f"{self.spec.share:.0%} of {cell}'s {self.metric} {self.reference_value:.3f}"
        return (f"{self.spec.share:.0%} of {cell}'s gap to the real-data floor, |{self.reference_value:.3f} − "
                f"{self.floor:.3f}|")


def resolve_margin(metric: str, spec: Margin, cell: str, runs: Sequence[GridRun],
                   floor: Mapping[str, float]) -> ResolvedMargin:
    """One metric's margin against `runs` (the primary batch's): a number as it is; a share of `cell`'s mean
    (`cell`) or of its distance to floor[metric] (`gap`). nan where the cell has no runs of the metric or, for
    `gap`, there is no floor."""
    if not isinstance(spec, ShareMargin):
        return ResolvedMargin(metric, spec, float(spec))
    values = [r.metrics[metric] for r in runs if r.cell == cell and metric in r.metrics]
    ref = float(np.mean(values)) if values else math.nan
    base = floor.get(metric, math.nan)
    size = abs(ref) if spec.of == "cell" else abs(ref - base)
    return ResolvedMargin(metric, spec, spec.share * size if math.isfinite(size) else math.nan, cell, ref,
                          base if spec.of == "gap" else math.nan)


def resolve_margins(p: Params, metrics: Sequence[str], cell: str, runs: Sequence[GridRun],
                    floor: Mapping[str, float]) -> dict[str, ResolvedMargin]:
    """Every metric's `ablation.margin` against `runs` (the primary batch's), its reference `cell` and floor."""
    return {m: resolve_margin(m, getattr(p.ablation.margin, m), cell, runs, floor) for m in metrics}


# ---------------------------------------------------------------- what the runs started with

ABLATION_KEYS = ("name", "steps", "seeds", "n_samples")


@dataclass(frozen=True)
class Recorded:
    """The `ablation.*` params the grid's runs started with (as their records keep them)."""
    runs: int
    names: Counter  # ablation.name
    blocks: Counter  # ("name=…, steps=…, seeds=…, n_samples=…") per run
    margins: dict[str, Counter]  # metric -> the runs' ablation.margin.<metric>, as label_value spells it
    configured: dict[str, str]  # metric -> the configured margin, spelled the same way

    def own_block(self, grid: str) -> bool:
        """Whether every run carries this grid's own ablation block (its name)."""
        return self.runs > 0 and set(self.names) == {grid}

    def same_margins(self) -> bool:
        return all(set(c) == {self.configured[m]} for m, c in self.margins.items())


def _spelled(metric: str, value) -> str:
    try:
        return label_value(f"ablation.margin.{metric}", value)
    except Exception:  # noqa: BLE001 - a value this code cannot read: shown as it is
        return str(value)


def as_recorded(p: Params, runs: Sequence[GridRun], metrics: Sequence[str]) -> Recorded:
    """What `runs` say their grid's ablation block was, against the configured margins."""
    names = Counter(r.params.get("ablation.name", "?") for r in runs)
    blocks = Counter(", ".join(f"{k} {r.params.get(f'ablation.{k}', '?')}" for k in ABLATION_KEYS) for r in runs)
    margins = {m: Counter(_spelled(m, r.params[f"ablation.margin.{m}"]) if f"ablation.margin.{m}" in r.params
                          else "unrecorded" for r in runs) for m in metrics}
    configured = {m: _spelled(m, getattr(p.ablation.margin, m)) for m in metrics}
    return Recorded(len(runs), names, blocks, margins, configured)
