"""The contrasts' sections of the report: Main effects, Verdict at every margin, Interactions, Seed plan and power;
and a contrast's words that the other sections share (its verdict, Holm interval, estimate, margin)."""
from __future__ import annotations

import math
from pathlib import Path

from pipeline.report.analysis import Analysis
from pipeline.report.contrasts import ALPHA, METRICS, NOT_MEASURED, Effect
from pipeline.report.formatting import _fmt, _num, _p, _signed
from pipeline.report.plots import margin_plot
from pipeline.report.run_facts import floor_metrics

ANSWER_METRICS = {"fid": "FID", "classifier_score": "classifier score"}  # the Answer's metrics
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


def _estimate(e: Effect | None) -> str:
    return "–" if e is None else f"{_signed(e.mean_diff)} {_holm_ci(e)}"


def _short_verdict(e: Effect | None) -> str:
    if e is None:
        return "–"
    return VERDICT_WORDS[e.verdict] + (f": **{e.better()}**" if e.verdict == "matters" else "")


def _margin_words(a: Analysis, metric: str) -> str:
    r = a.margins.get(metric)
    if r is None:
        return "–"
    how = "absolute" if not r.relative else f"`{r.configured}`: {r.how()}"
    return f"±{_num(r.value)} ({how})"


def _needed(e: Effect) -> str:
    seeds = e.seeds_needed
    if math.isnan(seeds):
        return "–"
    if math.isinf(seeds):
        return "none: the observed difference is 0" if e.mean_diff == 0 else "more than 10⁹ seeds"
    return f"{seeds:,.0f} seeds"


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
