"""The report's markdown: its sections (answer, setup, cells, effects, interactions, power, ranking, gammas,
samples), render_analysis and render."""
from __future__ import annotations

import math
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline import stats, tracking
from pipeline.config import Params
from pipeline.report.analysis import (ALPHA, BATCH_FIELDS, CELL_METRICS, METRICS, NOT_MEASURED, Analysis, Batch,
                                      Effect, _final_gamma, _param, _tag, _values, analyze, environment, floor_metrics,
                                      machine_of, replicate, seeds_ran_on, variance_split, wall_times)
from pipeline.report.formatting import _ci, _duration, _fmt, _num, _p, _short, _shown, _signed, _slug
from pipeline.report.margins import MarginBand, as_recorded
from pipeline.report.plots import _plots, margin_plot
from pipeline.report.runs import GridRun
from pipeline.report.second_evaluator import CHECKED, NOT_MEASURED_B, Check, second_evaluator
from pipeline.stats import t_interval

ANSWER_METRICS = {"fid": "FID", "classifier_score": "classifier score"}
_AGREES = {True: "**yes**", False: "no", None: "– (primary: < 2 seeds)"}
MAX_BUDGET_COLUMNS = 6


VERDICT_WORDS = {"matters": "a difference that matters", "too small to matter": "a difference too small to matter",
                 "unclear size": "a difference of unclear size", "equivalent": "equivalent",
                 "inconclusive": "inconclusive", "untestable": "untestable"}


def _verdict(e: Effect) -> str:
    """One of Lakens' four outcomes (or why there is none), in words."""
    v = e.verdict
    if v == "untestable":
        return ("untestable: fewer than two seeds" if e.n_seeds < 2 else
                "untestable: the per-seed differences do not vary")
    if v == "matters":
        return f"**a difference that matters: {e.better()}** (Holm p {_p(e.p_holm)}; the estimate is beyond ±{_num(e.margin)})"
    if v == "too small to matter":
        return (f"**a difference too small to matter** (Holm p {_p(e.p_holm)}; within ±{_num(e.margin)}: TOST Holm p "
                f"{_p(e.p_tost_holm)})")
    if v == "unclear size":
        return (f"**a difference of unclear size** (Holm p {_p(e.p_holm)}): the estimate is inside ±{_num(e.margin)}, "
                f"which TOST cannot show (Holm p {_p(e.p_tost_holm)}): not a difference that matters")
    if v == "equivalent":
        return f"**equivalent** within ±{_num(e.margin)} (TOST, Holm p {_p(e.p_tost_holm)})"
    mde = e.mde80_holm
    return (f"**inconclusive**: neither a difference nor within ±{_num(e.margin)}; these seeds detect "
            f"{'±' + _num(mde) if math.isfinite(mde) else '–'} at 80% power after Holm")


def _holm_ci(e: Effect) -> str:
    ci = e.holm_ci
    if ci is None or not math.isfinite(ci.lo):
        return "–"
    return f"[{_num(ci.lo)}, {_num(ci.hi)}] ({1 - ci.level:.2%})"


def _settled(e: Effect) -> str:
    d = e.drift
    if d is None or d.settled is None:
        return NOT_MEASURED if d is None or len(d.steps) < 3 else f"not measured ({d.reason})"
    return (f"{d.status}: drift {_signed(d.drift.mean)} over steps {d.steps[0]}-{d.steps[-1]} "
            f"({len(d.steps)} checkpoints; TOST ±{_num(d.equivalence.margin)}, p {_p(d.equivalence.p)}, "
            f"power {d.power:.0%})")


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


def _needed(e: Effect) -> str:
    seeds = e.seeds_needed
    if math.isnan(seeds):
        return "–"
    if math.isinf(seeds):
        return "none: the observed difference is 0" if e.mean_diff == 0 else "more than 10⁹ seeds"
    return f"{seeds:,.0f} seeds"


def _primary_words(a: Analysis) -> str:
    b = a.primary
    if b is None:
        return "no batch"
    others = len(a.batches) - 1
    return (f"the primary batch, {b.label} ({len(b.seeds)} seeds: {b.describe()})"
            + ("" if b.complete else ", **incomplete**")
            + (f"; {_others_words(others, bool(a.replications))}, not pooled into the verdicts"
               if others or a.replications else ""))


def _others_words(others: int, grids: bool) -> str:
    parts = ([f"the grid's {others} other batches" if others > 1 else "the grid's other batch"] if others else [])
    parts += ["the `ablation.replicate_with` grids"] if grids else []
    return " and ".join(parts) + (" is a replication" if parts == ["the grid's other batch"] else " are replications")


def _any_margin(b: MarginBand, unit: str) -> str:
    """What holds of one contrast at any margin, in words (its two thresholds)."""
    est = f"{b.label} {_signed(b.estimate)} [{_signed(b.holm_ci[0])}, {_signed(b.holm_ci[1])}]"
    if not b.testable:
        return f"{b.label}: untestable at any margin"
    eq = _num(b.equivalent_from) if math.isfinite(b.equivalent_from) else None
    if b.significant:
        return (f"{est}: **a difference for anyone who counts {_num(b.near)} {unit}**; " +
                (f"too small to matter only from {eq}" if eq else "never shown too small to matter"))
    return (f"{est}: no difference shown at any margin; " +
            (f"**equivalent only from {eq}** (inconclusive below)" if eq else "never shown equivalent"))


def _answer_at_any_margin(a: Analysis) -> list[str]:
    """The Answer's lead: per metric, what each contrast is at any margin (section Verdict at every margin)."""
    parts = []
    for metric, name in ANSWER_METRICS.items():
        bands = a.bands.get(metric) or []
        if bands:
            parts.append(f"{name}: " + "; ".join(_any_margin(b, name) for b in bands))
    if not parts:
        return []
    return ["**What holds at any margin** (the Holm interval: a significant contrast is a difference for anyone whose "
            "margin is at most its end nearest 0; equivalence, Holm over the metric's contrasts at that margin, is "
            "shown from the threshold on; Verdict at every margin) — " + ". ".join(parts) + "."]


def _margin_words(a: Analysis, metric: str) -> str:
    r = a.margins.get(metric)
    if r is None:
        return "–"
    how = "absolute" if not r.relative else f"`{r.configured}`: {r.how()}"
    return f"±{_num(r.value)} ({how})"


def _recorded_words(a: Analysis) -> str:
    """Whether the margins used are the ones the runs started with (their params' ablation block)."""
    rec = as_recorded(a.p, a.primary_runs, list(ANSWER_METRICS))
    if not rec.runs:
        return ""
    theirs = ", ".join(f"{ANSWER_METRICS[m]} {_shown(c)}" for m, c in rec.margins.items())
    if not rec.own_block(a.grid):
        return (f"**Not recorded correctly**: the runs' params carry an ablation block that is not this grid's "
                f"({_shown(rec.blocks)}): the params.yaml of their checkout, which the grid command did not replace "
                f"with its own (pipeline/grid/cli.py, fixed since), so which margins the grid started with is not on "
                f"record. The block they carry says {theirs}; this report uses the configured margins above.")
    if rec.same_margins():
        return "The runs started with these margins (their params' `ablation.margin`)."
    return f"**The runs started with other margins** ({theirs}); this report uses the configured margins above."


def _answer(a: Analysis) -> list[str]:
    """Plain sentences: what holds at any margin, then the margins, the batch, the budget, each axis' verdicts
    on FID and classifier score with their Holm intervals and their size against the floor, interactions,
    what is not measured."""
    runs = a.primary_runs
    steps = _shown(_values(runs, _param("train.steps")))
    n_expected = len(a.runs) + len(a.missing)
    floor = floor_metrics(runs)
    lines = _answer_at_any_margin(a)
    lines.append("**At the configured margins** (`ablation.margin`), the verdicts below: " + "; ".join(
        f"{name} {_margin_words(a, m)}" for m, name in ANSWER_METRICS.items()) + ". " + _recorded_words(a))
    lines += [f"The verdicts come from {_primary_words(a)}: a pair's two runs share the machine class, precision, "
             f"training code, metrics code and evaluator, and a seed is one unit (the mean of its pairs; n = "
             f"seeds, df = seeds − 1). At {steps} generator steps ({len(a.runs)} of {n_expected} runs in the grid"
             f"{', the grid is incomplete' if a.missing else ''}), each contrast gets one of Lakens' four outcomes, "
             f"each after a Holm correction over all contrasts of its metric: a difference that matters, a "
             f"difference too small to matter (within `ablation.margin`), equivalent, or inconclusive; the "
             f"interval beside it is Holm-adjusted, so it excludes 0 exactly when the difference is significant."]
    if floor.get("fid") and floor.get("classifier_score"):
        cells = {c: (np.mean([r.metrics["fid"] for r in runs if r.cell == c and "fid" in r.metrics] or [np.nan]),
                     np.mean([r.metrics["classifier_score"] for r in runs if r.cell == c
                              and "classifier_score" in r.metrics] or [np.nan])) for c in a.cells}
        fids = [v[0] for v in cells.values() if math.isfinite(v[0])]
        scores = [v[1] for v in cells.values() if math.isfinite(v[1])]
        if fids and scores:
            lines.append(f"**Absolute quality**: every cell is at FID {_num(min(fids))}-{_num(max(fids))}, "
                         f"{min(fids) / floor['fid']:.1f}-{max(fids) / floor['fid']:.1f}× the real-data floor's "
                         f"{_num(floor['fid'])}, and classifier score {_num(min(scores))}-{_num(max(scores))}, "
                         f"{min(scores) / floor['classifier_score']:.0%}-{max(scores) / floor['classifier_score']:.0%} "
                         f"of the floor's {_num(floor['classifier_score'])}: {_quality_words(max(fids) / floor['fid'])}.")
    for axis in a.axes:
        by_pair: dict[tuple[str, str], list[str]] = defaultdict(list)
        for metric, name in ANSWER_METRICS.items():
            for e in (e for e in a.effects[metric] if e.axis == axis):
                word = VERDICT_WORDS[e.verdict] + (f": {e.better()}" if e.verdict == "matters" else "")
                share = e.gap_share(floor.get(metric, math.nan))
                gap = f", {share:+.0%} of {e.b}'s gap to the floor" if math.isfinite(share) else ""
                by_pair[e.a, e.b].append(f"{name} {_signed(e.mean_diff)} (Holm interval {_holm_ci(e)}{gap}, "
                                         f"**{word}**)")
        if by_pair:
            lines.append(f"**{axis}**: " + "; ".join(f"{a_} − {b_}: {', '.join(parts)}"
                                                     for (a_, b_), parts in by_pair.items()) + ".")
    inter = [i for m in ANSWER_METRICS for i in a.interactions[m]]
    if inter:
        sig = [i for i in inter if i.significant]
        if sig:
            lines.append("Significant interactions after Holm: " + "; ".join(
                f"({i.a} − {i.b}) changes by {i.contrast.mean:+.3f} on {ANSWER_METRICS[i.metric]} between "
                f"{i.by_axis} {i.c} and {i.d} ({_ci(i.contrast)})" for i in sig) + ".")
        else:
            kinds = ", ".join(dict.fromkeys(f"{i.axis} × {i.by_axis}" for i in inter))
            none = sum(i.verdict == "no interaction" for i in inter)
            lines.append(f"No interaction ({kinds}) is significant after Holm for FID or classifier score; "
                         f"{none} of {len(inter)} are shown absent (within the margin).")
    drifts = [e.drift for m in ANSWER_METRICS for e in a.effects[m]]
    if drifts and all(d is None or d.settled is None for d in drifts):
        lines.append(f"Whether the contrasts had settled when training stopped: {NOT_MEASURED}; the verdicts hold "
                     f"for this budget, not for trained generators.")
    elif drifts:
        lines.append(_settled_words(a))
    return lines


# above this multiple of the floor's FID a generator is far from its data (the 5,000-step grid: 6-9x)
FAR_FROM_TRAINED = 3.0


def _quality_words(worst_fid_ratio: float) -> str:
    if worst_fid_ratio >= FAR_FROM_TRAINED:
        return "the generators are far from trained, and the contrasts below are between undertrained generators"
    return ("no cell matches the real data (1× and 100%), so the contrasts below hold for generators of this "
            "quality, not for ones trained to the floor")


def _settled_words(a: Analysis) -> str:
    """Per FID / classifier-score contrast: settled, still moving or not testable when training stopped, by
    how much, and with what power."""
    groups: dict[str, list[str]] = {"settled": [], "still moving": [], "not testable at this noise": [],
                                    "not measured": []}
    window = ""
    for metric, name in ANSWER_METRICS.items():
        for e in a.effects[metric]:
            d = e.drift
            if d is None or d.settled is None or d.drift is None:
                groups["not measured"].append(f"{name} {e.a} − {e.b}")
                continue
            window = window or f"steps {d.steps[0]}-{d.steps[-1]} ({len(d.steps)} checkpoints)"
            groups[d.status].append(f"{name} {e.a} − {e.b} (drift {_signed(d.drift.mean)}, power {d.power:.0%})")
    said = "; ".join(f"**{k}**: {', '.join(v)}" for k, v in groups.items() if v)
    return (f"Whether each contrast had settled when training stopped (its per-seed drift, the least-squares slope "
            f"over {window or 'the last half'}, times the window's length, TOST within ± margin/2; Main effects, settled): "
            f"{said}. Power is the chance the test had to call a contrast with no drift at all settled, at the "
            f"seeds' drift SD: still moving means not shown within ± margin/2 by a test with power >= 80% (its "
            f"verdict is this budget's and may change with more training); not testable means the drift is too "
            f"noisy for this test to say either.")


# what each older metrics version measured differently from today's (pipeline.metrics.summary.METRICS_VERSION)
OLD_METRICS = {
    "1": "**the classifier score of version 1 is machine-dependent**: its splits were drawn from the probabilities' "
         "float bits, which differ between CPU classes, so on another machine it can move by up to its "
         "split-to-split spread (FID is unaffected)",
    "2": "version 2 scored one draw of `evaluate.n_samples` images against the 1,000 held-out digits (no KID): its "
         "FIDs are not on today's scale (the 10,000-digit t10k reference, the mean over `evaluate.draws` draws)",
}


def _old_metrics_note(versions) -> str:
    from pipeline.metrics.summary import METRICS_VERSION  # here: pipeline.metrics imports torch (seconds)

    old = sorted({str(v) for v in versions} - {str(METRICS_VERSION)})
    notes = [OLD_METRICS[v] for v in old if v in OLD_METRICS]
    return f" ({'; '.join(notes)}; version {METRICS_VERSION} is today's)" if notes else ""


def _header(a: Analysis) -> list[str]:
    env = environment(a.runs)
    wall = wall_times(a.runs)
    floor = floor_metrics(a.primary_runs)
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
        f"| metrics code | version {_shown(env['metrics_version'])}{_old_metrics_note(env['metrics_version'])} |",
        f"| real-data floor (held-out vs training; primary batch, {a.primary.label if a.primary else 'all'}) | "
        + (", ".join(f"{m} {_num(floor[m])}" for m in CELL_METRICS if m in floor) or "?") + " |",
        f"| grid wall time | {_duration(wall['grid_span'])} (first run start to last run end) |",
        f"| summed run wall time | {_duration(wall['sum_of_runs'])} (final.wall_s of {n_walls} runs) |",
        "",
    ]
    return lines


def _cell_table(a: Analysis) -> list[str]:
    runs, cells = a.primary_runs, a.cells
    floor = floor_metrics(runs)
    lines = [f"## Metrics per cell (primary batch, {a.primary.label if a.primary else 'all seeds'}: mean ± 95% "
             "t-interval over seeds)", "",
             "Absolute quality beside each cell: its FID as a multiple of the real-data floor's FID (1× would be "
             "as close to the training data as held-out real digits are) and its classifier score as a share of "
             "the floor's (real held-out digits).", "",
             "| cell | n | " + " | ".join(f"{m} ({CELL_METRICS[m]} better)" for m in CELL_METRICS)
             + " | FID ÷ floor | classifier score ÷ floor |",
             "| --- | --- | " + " | ".join("---" for _ in CELL_METRICS) + " | --- | --- |"]
    best = {}
    for c in cells:
        row = [t_interval([r.metrics[m] for r in runs if r.cell == c and m in r.metrics]) for m in CELL_METRICS]
        n = sum(r.cell == c for r in runs)
        fid, score = row[list(CELL_METRICS).index("fid")][0], row[list(CELL_METRICS).index("classifier_score")][0]
        vs = [f"{fid / floor['fid']:.1f}×" if floor.get("fid") and math.isfinite(fid) else "–",
              f"{score / floor['classifier_score']:.0%}" if floor.get("classifier_score") and math.isfinite(score)
              else "–"]
        lines.append(f"| {c} | {n} | " + " | ".join(_fmt(s[0], s[1]) for s in row) + " | " + " | ".join(vs) + " |")
        for m, s in zip(METRICS, row):
            sign = 1 if METRICS[m] == "lower" else -1
            if not math.isnan(s[0]) and (m not in best or sign * s[0] < sign * best[m][1]):
                best[m] = (c, s[0])
    lines.append("| real data (floor: held-out vs training) | – | " +
                 " | ".join(_num(floor.get(m)) for m in CELL_METRICS) + " | 1× | 100% |")
    lines += ["", "Best configuration by mean: " +
              "; ".join(f"**{m}**: {best[m][0]}" for m in METRICS if m in best) + ".", ""]
    return lines


def _improvement(e: Effect) -> str:
    poi = e.improvement
    if poi is None or math.isnan(poi.p):
        return "–"
    return f"{poi.p:.2f}" + (f" [{poi.lo:.2f}, {poi.hi:.2f}]" if math.isfinite(poi.lo) else "")


def _effects_section(a: Analysis) -> list[str]:
    floor = floor_metrics(a.primary_runs)
    lines = [f"## Main effects (primary batch, {a.primary.label if a.primary else 'all seeds'}: the seed as the "
             "unit, paired t-test, Holm-corrected)", "",
             "A seed's value is the mean of its pairs: the runs that share the seed and the values of the other "
             "axes (its pairs share the data order and the start, so they are one unit, not several). The t-test "
             "runs over the seeds (df = seeds − 1). “a − b” is a's value minus b's: `none` is always subtracted, "
             "otherwise the level params.yaml sets comes first. The Holm correction runs over the family of all "
             f"contrasts of one metric (every axis, every pair of levels); “significant” needs a Holm p below "
             f"{ALPHA}. The Holm interval is the t-interval at the level Holm's step-down tested the contrast at "
             "(its confidence in brackets: α/(m − rank + 1) for a rejected contrast, the level of the step that "
             "stopped for the rest), so it excludes 0 exactly when the difference is significant; the unadjusted "
             "95% interval is in ablation.json.", "",
             "Four outcomes (Lakens), from the difference test and two one-sided tests (TOST) against ± the "
             "metric's smallest difference of interest, `ablation.margin.<metric>`, both Holm-corrected: "
             "**a difference that matters** (significant, estimate at least the margin), **a difference too small "
             "to matter** (significant, and TOST shows it within the margin), **equivalent** (no significant difference, "
             "within the margin), **inconclusive** (neither; with the smallest difference the seeds could have "
             "detected). A significant estimate inside the margin that TOST cannot show there is **a difference "
             "of unclear size**, never one that matters. P(a better) is the share of seeds whose value favours a "
             "(ties count one half), with a 95% bootstrap interval over seeds. Gap share: the effect as a share "
             "of b's distance to the real-data floor (+ closes it). Settled: the contrast's per-seed drift over "
             "full-size checkpoint evaluations in the last half of training, TOST within ± margin/2, with its power to call a drift of zero settled.", "",
             "| axis | comparison | metric | mean difference | Holm interval | seeds (pairs) | P(a better) [95% CI] "
             "| p-value | Holm p-value | margin: TOST Holm p | gap share | verdict | settled |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in METRICS:
        for e in a.effects[m]:
            share = e.gap_share(floor.get(m, math.nan))
            lines.append(f"| {e.axis} | {e.a} − {e.b} | {m} | {_signed(e.mean_diff)} | {_holm_ci(e)} | "
                         f"{e.n_seeds} ({e.n_pairs}) | {_improvement(e)} | {_p(e.p_value)} | {_p(e.p_holm)} | "
                         f"±{_num(e.margin)}: {_p(e.p_tost_holm)} | {f'{share:+.1%}' if math.isfinite(share) else '–'} | "
                         f"{_verdict(e)} | {_settled(e)} |")
    if not any(a.effects.values()):
        lines.append("| – | no axis has two levels with paired runs | – | – | – | – | – | – | – | – | – | – | – |")
    return lines + [""]


def _margin_section(a: Analysis, out: Path) -> list[str]:
    """Each contrast's verdict at every margin: its thresholds (table) and bands (figure)."""
    lines = ["## Verdict at every margin (primary batch)", "",
             "The verdict depends on the margin m only through two thresholds. Significance does not depend on m "
             "(Holm over the metric's difference tests). Equivalence (TOST against ±m, Holm over the metric's "
             "equivalence tests, all at the same m) is shown from a threshold m_eq on (found by bisection, the "
             "family tested again at each m by the code behind the verdicts above). So a significant contrast is a "
             "difference that matters for m ≤ |estimate|, of unclear size between |estimate| and m_eq, too small "
             "to matter from m_eq; a non-significant one is inconclusive below m_eq and equivalent from it. A "
             "significant contrast is also a difference for anyone whose margin is at most the end of its Holm "
             "interval nearest 0 (the interval lies beyond it). Margins used above: " + "; ".join(
                 f"{m} {_margin_words(a, m)}" for m in METRICS if m in a.margins) + ".", "",
             "| metric | comparison | estimate | Holm interval | a difference for margins ≤ | matters for margins ≤ "
             "| unclear size / inconclusive for margins in | too small to matter / equivalent from | at the "
             "configured margin |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    rows = 0
    for m in METRICS:
        for e, b in zip(a.effects.get(m, []), a.bands.get(m, [])):
            rows += 1
            eq = _num(b.equivalent_from) if math.isfinite(b.equivalent_from) else "never"
            if not b.testable:
                cells = ["–", "–", "untestable at any margin", "–"]
            elif b.significant:
                cells = [_num(b.near), _num(b.matters_up_to),
                         f"unclear size: ({_num(abs(b.estimate))}, {eq})", f"too small to matter: {eq}"]
            else:
                cells = ["–", "–", f"inconclusive: (0, {eq})", f"equivalent: {eq}"]
            lines.append(f"| {ANSWER_METRICS.get(m, m)} | {b.label} ({b.axis}) | {_signed(b.estimate)} | {_holm_ci(e)} | "
                         + " | ".join(cells)
                         + f" | ±{_num(e.margin)}: {_short_verdict(e)} |")
    if not rows:
        return lines[:2] + ["No contrast to show.", ""]
    name = margin_plot(a, out)
    return lines + ([""] + ([f"![{name}](ablation_files/{name})"] if name else []) + [""])


def _interaction_section(a: Analysis) -> list[str]:
    rows = [i for m in METRICS for i in a.interactions[m]]
    if not rows:
        return ["## Interactions", "", "No pair of axes has two levels each with paired runs: no interaction "
                "to estimate.", ""]
    lines = ["## Interactions (primary batch: does one axis change another's effect?)", "",
             "Per seed (the mean over any further axis' values): (a − b under c) − (a − b under d), the difference "
             "of differences; 0 means the a − b effect is the same under c and d. One-sample t-test over the seeds "
             "against 0 and TOST against ± the metric's margin, each Holm-corrected over the interactions of one "
             "metric.", "",
             "| effect | changed by | metric | difference of differences ± 95% CI | units | p-value | Holm p-value "
             "| verdict |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for i in rows:
        margin = a.margin(i.metric)
        verdict = {"untestable": "untestable",
                   "interacts": f"**interacts** (Holm p {_p(i.p_holm)}): the {i.axis} effect depends on {i.by_axis}",
                   "no interaction": f"**no interaction**: within ±{_num(margin)} (TOST, Holm p {_p(i.p_tost_holm)})",
                   }.get(i.verdict, f"**inconclusive**: neither an interaction nor within ±{_num(margin)}")
        lines.append(f"| {i.axis}: {i.a} − {i.b} | {i.by_axis}: {i.c} vs {i.d} | {i.metric} | "
                     f"{_fmt(i.contrast.mean, i.contrast.half_width)} | {i.contrast.n} | {_p(i.contrast.p)} | "
                     f"{_p(i.p_holm)} | {verdict} |")
    return lines + [""]


def _power_section(a: Analysis) -> list[str]:
    """What each contrast of the primary batch can detect after Holm with the seeds it has, from the SD of
    its per-seed values; and the seeds the observed difference would need."""
    rows = [e for m in METRICS for e in a.effects[m] if e.n_seeds >= 2]
    lines = ["## Seed plan and power (primary batch)", ""]
    if not rows:
        return lines + ["No contrast has two seeds: nothing to plan from.", ""]
    lines += ["The smallest true difference a two-sided paired t-test over the seeds detects with 80% power at "
              "the strictest Holm level (α / the contrasts of the metric), given the SD of the per-seed values. "
              "Exact noncentral-t power. Below the margin, a contrast that is not different can be shown "
              "equivalent; above it, “inconclusive” is the most the seeds can say. Last column: seeds for 80% power "
              "at the observed difference, per test (a planning number: the observed difference is itself "
              "uncertain).", "",
              "| metric | comparison | margin | seeds | SD of seed values | detectable | needed for the observed "
              "difference |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for e in rows:
        mde = e.mde80_holm
        lines.append(f"| {e.metric} | {e.axis}: {e.a} − {e.b} | ±{_num(e.margin)} | {e.n_seeds} | "
                     f"{_num(e.contrast.sd)} | {'±' + _num(mde) if math.isfinite(mde) else '–'} | {_needed(e)} |")
    return lines + [""]


def _batches_section(a: Analysis) -> list[str]:
    """The batches: what their pairs share, their seeds, their floor; which is primary."""
    lines = ["## Batches", "",
             "A batch is the seeds whose runs share what a pair must share: " + ", ".join(BATCH_FIELDS) + " (the "
             "training code of a commit is the code its train, sample and evaluate stages import, less what only logs, "
             "records or draws (pipeline/provenance.py); a field a run did not record is its own value, `unrecorded`). The verdicts "
             "come from the newest complete batch; the others are replications (next section), never pooled "
             "unchecked. Each batch's real-data floor is its own (its evaluator's).", "",
             "| batch | runs | role | complete | " + " | ".join(BATCH_FIELDS) + " | floor FID | floor classifier score |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in BATCH_FIELDS) + " | --- | --- |"]
    for b in a.batches:
        floor = floor_metrics(b.runs)
        key = list(b.key)
        key[3] += f" ({', '.join(c[:7] for c in b.commits)})" if b.commits else ""
        role = "**primary**" if b is a.primary else ("mixed: never primary" if b.mixed else "replication")
        lines.append(f"| {b.label} | {len(b.runs)} | {role} | {'yes' if b.complete else 'no'} | " + " | ".join(key)
                     + f" | {_num(floor.get('fid'))} | {_num(floor.get('classifier_score'))} |")
    return lines + [""]


def _variance_section(a: Analysis) -> list[str]:
    """Training-seed vs sampling spread, and the margins against them."""
    lines = ["## Which variance is it? (training seeds vs sampling, per batch)", ""]
    splits = [(b, variance_split(b.runs, m)) for b in a.batches for m in METRICS]
    if not any(v.n_resampled for _, v in splits):
        return lines + ["No run has a second sampling seed yet (`python -m pipeline.resample --grid "
                        f"{a.grid}`): the spread between seeds cannot be split into training and sampling.", ""]
    lines += ["Per batch: both SDs come from the same runs (a batch without resampled runs has no split). " + "Each resampled generator drew its images again from a second latent seed "
              "(`python -m pipeline.resample`), evaluated the same way; runs of metrics version 3 carry their own "
              "standard error instead (the mean over `evaluate.draws` draws: FID's by the delta method, the "
              "classifier score's over the draws; source `se`), the sampling SD is then their root mean square. "
              "Sampling SD: one generator's spread over "
              "latent seeds; seed SD: the spread between a cell's training seeds (first draws, pooled over "
              "cells), which includes the sampling part. A paired difference carries sampling noise of √2 × the "
              "sampling SD; the equivalence margin should sit well above it (a margin inside the sampling noise "
              "could never be shown) and below the effects that matter.", "",
              "| batch | metric | runs resampled (or with an SE) | sampling SD | seed SD | training part | "
              "seed SD / sampling SD | margin | margin / sampling SD of a difference |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for b, v in splits:
        if not v.n_resampled:
            continue
        margin = a.margin(v.metric)
        noise = math.sqrt(2) * v.sampling_sd
        lines.append(f"| {b.label} | {v.metric} | {v.n_resampled}{' (SE)' if v.source == 'se' else ''} | {_num(v.sampling_sd)} | {_num(v.seed_sd)} | "
                     f"{_num(v.training_sd)} | {_num(v.ratio)} | ±{_num(margin)} | "
                     f"{_num(margin / noise) if noise > 0 else '–'} |")
    return lines + [""]


def _seeds_section(a: Analysis) -> list[str]:
    """Which seeds ran where: a contrast pairs a seed's cells, so they should share one machine."""
    where = seeds_ran_on(a.runs)
    lines = ["## Where each seed ran", "",
             "A contrast pairs the runs of one seed, so a seed's cells run on one machine class and precision; "
             "seeds may differ. Machine: the CPU's design and class (or the GPU); device and precision. The "
             "evaluator (its checksum) is trained on the machine that evaluates: its FIDs and the real-data floor "
             "agree to a few decimals across machines, not bit for bit, which a paired contrast does not "
             "notice.", "",
             "| seed | runs | machine; device, precision | metrics code | evaluator |", "| --- | --- | --- | --- | --- |"]
    for seed, machines in where.items():
        runs = [r for r in a.runs if r.seed == seed]
        versions = _values(runs, lambda r: r.tags.get("metrics.version", "1"))
        lines.append(f"| {seed} | {sum(machines.values())} | {_shown(machines)} | version {_shown(versions)} | "
                     f"`{_shown(_values(runs, _tag('evaluator.sha256')), 12)}` |")
    mixed = [seed for seed, machines in where.items() if len(machines) > 1]
    if mixed:
        lines += ["", f"**Seed(s) {', '.join(map(str, mixed))} ran on more than one machine**: their pairs mix "
                  "machine differences into the contrasts."]
    return lines + [""]


def _replication_section(a: Analysis) -> list[str]:
    lines = ["## Replication (other batches and grids against the primary)", "",
             "Each other batch of this grid, and each `ablation.replicate_with` grid's primary batch, against the "
             "primary batch, contrast by contrast (FID and classifier score). A replication **agrees** when its "
             "estimate lies in the primary's 95% prediction interval for the mean of a new batch of that many "
             "seeds (mean ± t · SD · √(1/n + 1/n_new): where it should fall if the batches differ only by seed "
             "noise), not when its verdict matches: a 3-seed batch is inconclusive by construction. "
             "Heterogeneity: Welch's t-test of batch × contrast on the two batches' per-seed values (p < "
             f"{ALPHA}: the contrast differs between the batches). Pooled over both batches' seeds only where "
             "the replication agrees and no heterogeneity is found; the verdicts stay the primary's.", ""]
    others = a.others()
    if a.primary is None or not others:
        missing = [g for g, o in a.replications.items() if not o.runs]
        return lines + ["One batch and no second grid with runs: nothing to compare"
                        + (f" (`{'`, `'.join(missing)}`: no finished runs in the store or in results/)" if missing
                           else "") + ".", ""]
    for name, b in others:
        pairs = replicate({m: a.effects[m] for m in ANSWER_METRICS}, {m: b.effects[m] for m in ANSWER_METRICS})
        lines += [f"### {a.primary.label} (primary) vs {name}", "", f"{name}: {len(b.runs)} runs; {b.describe()}.", "",
                  f"| metric | comparison | primary ({len(a.primary.seeds)} seeds) | {name} ± 95% CI | prediction "
                  "interval | agrees | heterogeneity p | pooled ± 95% CI |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for rp in pairs:
            lo, hi = rp.interval
            pooled = rp.pooled
            lines.append(f"| {rp.primary.metric} | {rp.primary.axis}: {rp.primary.a} − {rp.primary.b} | "
                         f"{_signed(rp.primary.mean_diff)} | {_fmt(rp.other.mean_diff, rp.other.half_width)} | "
                         f"[{_num(lo)}, {_num(hi)}] | {_AGREES[rp.agrees]} | "
                         f"{_p(rp.p_heterogeneity)}{' (**differs**)' if rp.heterogeneous else ''} | "
                         f"{_fmt(pooled.mean, pooled.half_width) + f' ({pooled.n} seeds)' if pooled else '–'} |")
        agree = sum(rp.agrees is True for rp in pairs)
        untested = sum(rp.agrees is None for rp in pairs)
        het = [f"{rp.primary.metric} {rp.primary.a} − {rp.primary.b}" for rp in pairs if rp.heterogeneous]
        lines += ["", f"{agree} of {len(pairs) - untested} contrasts agree"
                  + (f" ({untested} not testable: the primary has fewer than 2 seeds of them)" if untested else "")
                  + "; heterogeneity found for "
                  + (", ".join(het) if het else "none") + ".", ""]
    return lines


def _estimate(e: Effect | None) -> str:
    return "–" if e is None else f"{_signed(e.mean_diff)} {_holm_ci(e)}"


def _short_verdict(e: Effect | None) -> str:
    if e is None:
        return "–"
    return VERDICT_WORDS[e.verdict] + (f": **{e.better()}**" if e.verdict == "matters" else "")


def _holds(c: Check) -> str:
    return {True: "**yes**", False: "**no**", None: "–"}[c.holds]


def _second_evaluator_section(a: Analysis) -> list[str]:
    """Each FID and classifier-score verdict of the primary batch under evaluator A and evaluator B."""
    s = second_evaluator(a)
    lines = ["## Second evaluator (primary batch: does each verdict hold under evaluator B?)", ""]
    if not s.measured:
        return lines + [f"Evaluator B: {NOT_MEASURED_B}. None of the primary batch's {s.runs} runs has its "
                        "figures (`evaluator_b.fid`, `evaluator_b.classifier_score`). Evaluator B is a second "
                        "classifier (another architecture and seed, the same training split: stage "
                        "train_evaluator_b) whose figures the evaluate stage logs beside evaluator A's; for runs "
                        "that have them, this section checks each FID and classifier-score verdict under both.", ""]
    fid_margin = (f"±{_num(s.margins['fid'])} (±{_num(a.margin('fid'))} × B's floor FID {_num(s.floor_b.get('fid'))}"
                  f" / A's {_num(s.floor_a.get('fid'))}: the same multiple of its own real-data floor)"
                  if s.floor_a.get("fid") and s.floor_b.get("fid") else f"±{_num(s.margins['fid'])} (A's: no floors)")
    lines += [f"Evaluator B (`{_shown(s.archs)}`, checksum `{_shown(s.checksums, 12)}`; a second classifier, "
              "another architecture and seed, trained on the same split) scored the same samples as evaluator A "
              f"in {s.runs_with_b} of the primary batch's {s.runs} runs. Its contrasts go through the same "
              "code as A's: the seed as the unit, Holm over each metric's contrasts, the four outcomes. Its FID "
              f"is a distance in other features, so its FID margin is {fid_margin}; the classifier score's is "
              f"A's, ±{_num(s.margins['classifier_score'])}. A verdict **holds** when B gives the same outcome "
              "and, for a difference that matters, the same better level. Estimates: mean difference and Holm "
              "interval.", ""]
    if len(s.checksums) > 1:
        lines += [f"**Evaluator B differs between these runs** ({len(s.checksums)} checksums): its contrasts "
                  "mix judges.", ""]
    lines += ["| metric | comparison | evaluator A | A's verdict | evaluator B | B's verdict | holds under both |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in s.checks:
        lines.append(f"| {CHECKED[c.a.metric]} | {c.a.axis}: {c.a.a} − {c.a.b} | {_estimate(c.a)} | "
                     f"{_short_verdict(c.a)} | {_estimate(c.b)} | {_short_verdict(c.b)} | {_holds(c)} |")
    held = [c for c in s.checks if c.holds is not None]
    broken = [f"{CHECKED[c.a.metric]} {c.a.a} − {c.a.b}" for c in held if not c.holds]
    lines += ["", f"{sum(bool(c.holds) for c in held)} of {len(held)} verdicts hold under both evaluators"
              + (f"; not: {', '.join(broken)}." if broken else "."), ""]
    return lines


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


def _gamma_section(a: Analysis) -> list[str]:
    lines = ["## Attention usage (learned gamma of each attention layer)", ""]
    if not a.gamma_layers:
        return lines + ["No gamma histories in these runs (no attention layers, or not logged).", ""]
    lines += ["An attention layer adds gamma × attention to its input; gamma starts at "
              f"{_shown(_values(a.runs, _param('attention.gamma_init')))}, so how far it moves says how much the "
              "network uses the layer. Its sign is not meaningful (the value projection can flip with it), "
              "so the table gives the final |gamma| per layer, mean ± 95% t-interval over seeds, and the "
              "signed values of the seeds:", "",
              "| cell | " + " | ".join(a.gamma_layers) + " |",
              "| --- | " + " | ".join("---" for _ in a.gamma_layers) + " |"]
    for c in a.cells:
        finals = {layer: [g for r in a.runs if r.cell == c and (g := _final_gamma(r, layer)) is not None]
                  for layer in a.gamma_layers}
        if any(finals.values()):
            lines.append(f"| {c} | " + " | ".join(
                f"{_fmt(*t_interval([abs(g) for g in v])[:2])} ({', '.join(f'{g:+.2f}' for g in v)})" if v else "–"
                for v in finals.values()) + " |")
    return lines + ["", "![gamma_over_training.png](ablation_files/gamma_over_training.png)", ""]


SAMPLES_MANIFEST = "samples.json"  # in ablation_files/: which run each sample image came from


def _samples(a: Analysis, out: Path, client, previous: Path | None = None) -> list[str]:
    """Each cell's images from its median-FID run, or, where that run's images are nowhere (a record
    converted from an older report), from the run nearest the median that has them: from the MLflow
    store, else those an earlier render left in `previous` (the report's ablation_files/, listed in its
    samples.json), so a report rebuilt from the run records alone, on a clone without the store, keeps
    them."""
    import json

    lines = ["## Samples and attention of each cell's median run (by FID)", ""]
    kept = {}
    if previous is not None and (previous / SAMPLES_MANIFEST).exists():
        kept = json.loads((previous / SAMPLES_MANIFEST).read_text())
    manifest = {}

    def fetch(run: GridRun, art: str, target: Path) -> bool:
        if client is not None:
            try:
                Path(client.download_artifacts(run.run_id, f"samples/{art}", str(out))).replace(target)
                return True
            except Exception:  # noqa: BLE001 - not in the store, or no map (position none)
                pass
        if kept.get(target.name) == run.run_id and (previous / target.name).exists():
            shutil.copy2(previous / target.name, target)
            return True
        return False

    for c in a.cells:
        cell_runs = [r for r in a.runs if r.cell == c]
        med = _median_run(cell_runs)
        lines += [f"### {c}", ""]
        shown = None
        for run in sorted(cell_runs, key=lambda r: (abs(r.metrics["fid"] - med.metrics["fid"]), r.seed)):
            grid_png = out / f"{_slug(c)}-grid.png"
            if fetch(run, "grid.png", grid_png):
                shown = run
                manifest[grid_png.name] = run.run_id
                attention = out / f"{_slug(c)}-attention.png"
                if fetch(run, "attention.png", attention):
                    manifest[attention.name] = run.run_id
                break
        if shown is None:
            lines += [f"median run: seed {med.seed}, FID {_num(med.metrics['fid'])}, run `{med.run_id}`", "",
                      "No images: no run of this cell has its samples in the MLflow store or an earlier render.", ""]
            continue
        note = "the median run" if shown is med else (f"the run nearest the median (seed {med.seed}, FID "
                                                       f"{_num(med.metrics['fid'])}) that has its images")
        lines += [f"seed {shown.seed}, FID {_num(shown.metrics['fid'])}, run `{shown.run_id}`: {note}", ""]
        for art in ("grid.png", "attention.png"):
            if (out / f"{_slug(c)}-{art}").exists():
                lines.append(f"![{c} {art}](ablation_files/{_slug(c)}-{art})")
        lines.append("")
    shutil.rmtree(out / "samples", ignore_errors=True)  # download_artifacts' folder, now empty
    (out / SAMPLES_MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return lines


def _median_run(runs: list[GridRun]) -> GridRun:
    ordered = sorted(runs, key=lambda r: r.metrics["fid"])
    return ordered[(len(ordered) - 1) // 2]


def render_analysis(a: Analysis, out: Path, client=None, previous: Path | None = None) -> str:
    """The markdown of `a`; plots and sample images (from the MLflow client's store, else kept from
    `previous`, the last render's ablation_files/) are written to `out`, which the markdown links as
    ablation_files/ (relative to the markdown file)."""
    lines = [f"# Ablation report: grid `{a.grid}`", ""]
    if not a.runs:
        return "\n".join(lines + [
            f"No finished runs of grid `{a.grid}` in the MLflow store ({tracking.tracking_uri()}).", "",
            "Run the grid first: `make grid` (or `python -m pipeline.grid run`)."]) + "\n"
    lines += [f"Built from {len(a.runs)} runs (experiment `{a.p.mlflow.experiment}`, tag `grid.name = {a.grid}`: "
              f"the MLflow store and the run records in results/{_slug(a.grid)}/); regenerate with "
              f"`python -m pipeline.report --grid {a.grid}` (a clone without the store: from the records alone).", "",
              "## Answer", ""] + [f"- {s}" for s in _answer(a)] + ["", "## Setup", ""]
    lines += _header(a)
    lines += _batches_section(a)
    lines += _seeds_section(a)
    lines += _cell_table(a)
    lines += _effects_section(a)
    lines += _margin_section(a, out)
    lines += _budget_section(a)
    lines += _interaction_section(a)
    lines += _replication_section(a)
    lines += _second_evaluator_section(a)
    lines += _variance_section(a)
    lines += _power_section(a)
    plots = _plots(a, out)
    lines += _ranking_section(a)
    if "ranking_over_budget.png" in plots:
        lines += ["![ranking_over_budget.png](ablation_files/ranking_over_budget.png)", ""]
    lines += _gamma_section(a)
    lines += ["## Metrics per cell, every run", "", "![metrics.png](ablation_files/metrics.png)", ""]
    lines += _samples(a, out, client, previous)
    return "\n".join(lines) + "\n"


def render(p: Params, grid: str, runs: list[GridRun], out: Path, client=None,
           expected_seeds: Sequence[int] | None = None) -> str:
    """The markdown report of `runs`; see render_analysis."""
    return render_analysis(analyze(p, grid, runs, expected_seeds), out, client)
