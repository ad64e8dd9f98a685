"""The report's Answer: what holds at any margin, the configured margins and whether the runs started with them, the
batch the verdicts come from, absolute quality against the real-data floor, each axis' verdicts on FID and
classifier score, the interactions, and whether the contrasts had settled."""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from pipeline.report.analysis import Analysis
from pipeline.report.contrasts import NOT_MEASURED
from pipeline.report.formatting import _ci, _num, _shown, _signed
from pipeline.report.margins import MarginBand, as_recorded
from pipeline.report.render_contrasts import ANSWER_METRICS, VERDICT_WORDS, _holm_ci, _margin_words
from pipeline.report.run_facts import _param, _values, floor_metrics


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
