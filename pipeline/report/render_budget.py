"""The report's sections over the training budget: Where each contrast settles (the budget scan, the planned
budget: pipeline.report.budget) and Ranking over the training budget (quick FID, a picture)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline import stats
from pipeline.report.analysis import Analysis
from pipeline.report.formatting import _num, _short, _signed, _shown
from pipeline.report.render_contrasts import ANSWER_METRICS
from pipeline.report.run_facts import _param, _values

MAX_BUDGET_COLUMNS = 6


def _scan_cell(point) -> str:
    d = point.drift
    drift = _signed(d.drift.mean) if d is not None and d.drift is not None else "–"
    mark = {True: "✓", False: "✗", None: "?"}[point.within] + ("✓" if point.settled else "")
    return f"{_signed(point.effect.mean_diff)}; drift {drift} {mark}"


def _budget_section(a: Analysis) -> list[str]:
    scan = a.budget_scan
    if scan is None:
        return []
    seeds = sorted({s for c in scan.contrasts for p in c.points for s in p.effect.seeds})
    planned = scan.planned
    lines = ["## Where each contrast settles (the primary batch at every budget its checkpoints cover)", "",
             "Each run's full-size evaluations at its checkpoints (`train.full_eval_at`) are what a run of that "
             "many steps would have scored (a step's draws depend only on the seed and the step, and no schedule "
             "depends on the total), so the main effects are computed again at every checkpoint whose last 40% "
             f"holds ≥ {stats.DRIFT_MIN_POINTS} checkpoints, with the seed as the unit ({len(seeds)} "
             f"seed{'s' if len(seeds) != 1 else ''}). A cell "
             "shows the mean difference a − b at that budget; its drift is the mean over seeds of the least-squares "
             "slope over the budget's last 40%, times that window's length; ✓ the drift lies within ± margin/2, "
             "✗ it does not, ✓✓ the TOST shows it within (the grid's \"settled\"). “Settles at”: the smallest "
             "budget from which the drift stays within ± margin/2.", "",
             "| metric | comparison | margin/2 | " + " | ".join(f"{b:,}" for b in scan.budgets) + " | settles at |",
             "| --- | --- | --- | " + " | ".join("---" for _ in scan.budgets) + " | --- |"]
    for c in scan.contrasts:
        by_budget = {p.budget: p for p in c.points}
        cells = [(_scan_cell(by_budget[b]) if b in by_budget else "–") for b in scan.budgets]
        settles = f"{c.settles_at:,}" if c.settles_at is not None else "not within the scan"
        lines.append(f"| {ANSWER_METRICS.get(c.metric, c.metric)} | {c.label} | ±{_num(c.margin / 2)} | "
                     + " | ".join(cells) + f" | {settles} |")
    lines += ["", "The planned budget (the rule fixed before the pilot ran, pipeline/report/budget.py): the smallest "
              f"of these budgets, and no fewer than {scan.floor:,} steps, from which every contrast above stays "
              "within ± margin/2: " + (f"**{planned:,} steps**." if planned is not None else
                                        "**none** (some contrast is still moving at the largest budget)."), ""]
    return lines


def _budget_steps(steps: list[int]) -> list[int]:
    """All budgets, or MAX_BUDGET_COLUMNS of them evenly spaced, always with the last."""
    if len(steps) <= MAX_BUDGET_COLUMNS:
        return steps
    idx = np.linspace(0, len(steps) - 1, MAX_BUDGET_COLUMNS).round().astype(int)
    return [steps[i] for i in sorted(set(idx))]


@dataclass
class RankingHolds:
    """Whether the final budget's ranking (quick FID) already holds at the earlier budgets: what
    ranking_sentence says."""
    final: int  # the final budget
    earlier: list[int]  # the budgets before it, ascending
    holds_at: list[int]  # the earlier budgets whose order of the cells they share is the final one's
    since: int  # the earliest budget from which it holds at every later one (`final`: at no earlier one)
    best: str  # the final budget's best cell
    best_at: list[int]  # the earlier budgets whose best cell is it


def ranking_holds(ranking: dict[int, list[str]]) -> RankingHolds | None:
    """The final ranking against the earlier ones; None with one budget (nothing to compare)."""
    steps = sorted(ranking)
    if len(steps) < 2:
        return None
    final = ranking[steps[-1]]

    def same(s: int) -> bool:
        shared = [c for c in ranking[s] if c in final]
        return shared == [c for c in final if c in shared]

    since = steps[-1]
    for s in reversed(steps[:-1]):
        if not same(s):
            break
        since = s
    return RankingHolds(steps[-1], steps[:-1], [s for s in steps[:-1] if same(s)], since, final[0],
                        [s for s in steps[:-1] if ranking[s] and ranking[s][0] == final[0]])


def ranking_sentence(ranking: dict[int, list[str]]) -> str:
    """Whether the final budget's ranking (quick FID) already holds at the earlier budgets (ranking_holds)."""
    r = ranking_holds(ranking)
    if r is None:
        return "Only one budget was evaluated: no earlier ranking to compare."
    if len(r.holds_at) == len(r.earlier):
        head = f"The final-budget ranking (step {r.final}) holds at every earlier budget"
    elif r.since < r.final:
        head = (f"The final-budget ranking (step {r.final}) holds from step {r.since} on; it differs at step(s) "
                f"{', '.join(str(s) for s in r.earlier if s not in r.holds_at)}")
    else:
        head = f"The final-budget ranking (step {r.final}) holds at no earlier budget"
    tail = (f"its best cell, {_short(r.best)}, is best at " +
            ("every earlier budget" if len(r.best_at) == len(r.earlier) else
             f"step(s) {', '.join(map(str, r.best_at))} of the earlier ones" if r.best_at else "no earlier budget"))
    return f"{head}; {tail}."


def _ranking_section(a: Analysis) -> list[str]:
    lines = ["## Ranking over the training budget (quick FID; a picture, no verdict rests on it)", ""]
    if not a.ranking:
        return lines + ["No quick-FID history (train.eval_every 0?): no ranking over budgets.", ""]
    steps = _budget_steps(sorted(a.ranking))
    eval_n = _shown(_values(a.runs, _param("train.eval_n")))
    lines += [f"Mean quick FID over the seeds that logged one (on {eval_n} samples, noisier than the final FID) and "
              "the rank among cells (#1 = lowest) at each budget. " + ranking_sentence(a.ranking) + " Whether a "
              "contrast had settled is a test on full-size checkpoint evaluations (Main effects, settled), not "
              "this ranking.", "",
              "| cell | " + " | ".join(f"step {s}" for s in steps) + " |",
              "| --- | " + " | ".join("---" for _ in steps) + " |"]
    for c in a.cells:
        row = [f"{_num(a.quick_fid[s][c])} (#{a.ranking[s].index(c) + 1})" if c in a.quick_fid[s] else "–"
               for s in steps]
        lines.append(f"| {c} | " + " | ".join(row) + " |")
    return lines + [""]
