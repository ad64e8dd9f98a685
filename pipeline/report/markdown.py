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
from pipeline.report.analysis import (ALPHA, CELL_METRICS, METRICS, PILOT_SEEDS, SETTLED_SHARE, SETTLED_TAU, Analysis,
                                      Effect, Replicated, Settled, _final_gamma, _param, _tag, _values, analyze,
                                      environment, floor_metrics, machine_of, replicate, seed_halves, seeds_ran_on,
                                      variance_split, wall_times)
from pipeline.report.formatting import _ci, _duration, _fmt, _num, _p, _short, _shown, _signed, _slug
from pipeline.report.plots import _plots
from pipeline.report.runs import GridRun
from pipeline.stats import t_interval

ANSWER_METRICS = {"fid": "FID", "classifier_score": "classifier score"}
MAX_BUDGET_COLUMNS = 6


def _verdict(e: Effect, provisional: bool = False) -> str:
    """One of three verdicts (or why there is none), in words."""
    v = e.verdict
    if v == "untestable":
        return ("untestable: too few pairs" if e.n_pairs < 2 else
                "untestable: the paired differences do not vary")
    if v == "better":
        text = f"**better: {e.better()}** (Holm p {_p(e.p_holm)})"
    elif v == "equivalent":
        text = f"**equivalent** within ±{_num(e.margin)} (TOST, Holm p {_p(e.p_tost_holm)})"
    else:
        mde = e.mde80_holm
        text = (f"**inconclusive**: neither a difference nor within ±{_num(e.margin)}; these pairs detect "
                f"{'±' + _num(mde) if math.isfinite(mde) else '–'} at 80% power after Holm")
    return text + (" (provisional: the ranking was still moving)" if provisional else "")


def _provisional(a: Analysis) -> bool:
    settled = a.settled
    return settled.known and not settled.settled


def _needed(e: Effect) -> str:
    pairs, seeds = e.pairs_needed, e.seeds_needed
    if math.isnan(pairs):
        return "–"
    if math.isinf(pairs):
        return "none: the observed difference is 0" if e.mean_diff == 0 else "more than 10⁹ pairs"
    return f"{pairs:,.0f} pairs = {seeds:,.0f} seeds per cell"


def _answer(a: Analysis) -> list[str]:
    """3-5 plain sentences: the budget, each axis' verdicts on FID and classifier score, interactions."""
    steps = _shown(_values(a.runs, _param("train.steps")))
    n_expected = len(a.runs) + len(a.missing)
    settled = a.settled
    lines = [f"At {steps} generator steps with {len(a.seeds)} seeds per cell ({len(a.runs)} of {n_expected} "
             f"runs{', the grid is incomplete' if a.missing else ''}), each contrast gets one of three verdicts, "
             f"each after a Holm correction over all contrasts of its metric: better (a significant difference), "
             f"equivalent (within the margin of `ablation.margin`, by two one-sided tests) or inconclusive. "
             + ("**Provisional**: the ranking was still moving when training stopped (see Ranking)."
                if settled.known and not settled.settled else
                "The ranking had settled by the end of training." if settled.known else "")]
    for axis in a.axes:
        by_pair: dict[tuple[str, str], list[str]] = defaultdict(list)
        for metric, name in ANSWER_METRICS.items():
            for e in (e for e in a.effects[metric] if e.axis == axis):
                word = {"better": f"better: {e.better()}", "equivalent": f"equivalent within ±{_num(e.margin)}"}.get(
                    e.verdict, e.verdict)
                by_pair[e.a, e.b].append(f"{name} {_signed(e.mean_diff)} ({_ci(e.contrast)}, **{word}**)")
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
    return lines


def _old_metrics_note(versions) -> str:
    from pipeline.metrics.summary import METRICS_VERSION  # here: pipeline.metrics imports torch (seconds)

    if all(str(v) == str(METRICS_VERSION) for v in versions):
        return ""
    return (f" (**the classifier score of version 1 is machine-dependent**: its splits were drawn from the "
            f"probabilities' float bits, which differ between CPU classes, so on another machine it can move by "
            f"up to its split-to-split spread; version {METRICS_VERSION} draws them from the images. FID is "
            f"unaffected)")


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
        f"| metrics code | version {_shown(env['metrics_version'])}{_old_metrics_note(env['metrics_version'])} |",
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


def _improvement(e: Effect) -> str:
    poi = e.improvement
    if poi is None or math.isnan(poi.p):
        return "–"
    return f"{poi.p:.2f}" + (f" [{poi.lo:.2f}, {poi.hi:.2f}]" if math.isfinite(poi.lo) else "")


def _effects_section(a: Analysis) -> list[str]:
    lines = ["## Main effects (paired differences, paired t-test, Holm-corrected)", "",
             "Each difference pairs two runs that share the seed and the values of the other axes. "
             "“a − b” is a's value minus b's: `none` is always subtracted, otherwise the level params.yaml "
             "sets comes first. The Holm correction runs over the family of all contrasts of one metric "
             f"(every axis, every pair of levels); a verdict of “significant” needs a Holm p below {ALPHA}.", "",
             "Three verdicts: **better** (the paired t-test's Holm p below α), **equivalent** (two one-sided "
             "t-tests, TOST, against ± the metric's smallest difference of interest, `ablation.margin.<metric>`, "
             "Holm-corrected alongside: the difference is shown to lie within the margin), or **inconclusive** "
             "(neither; with the smallest difference these pairs could have detected). P(a better) is the share "
             "of pairs in which a beats b (ties count one half), with a 95% bootstrap interval over seeds "
             "(as rliable's probability of improvement, without a t-test's assumptions).", "",
             "| axis | comparison | metric | mean difference ± 95% CI | pairs | P(a better) [95% CI] | p-value "
             "| Holm p-value | margin: TOST Holm p | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    provisional = _provisional(a)
    for m in METRICS:
        for e in a.effects[m]:
            lines.append(f"| {e.axis} | {e.a} − {e.b} | {m} | {_fmt(e.mean_diff, e.half_width)} | {e.n_pairs} | "
                         f"{_improvement(e)} | {_p(e.p_value)} | {_p(e.p_holm)} | "
                         f"±{_num(e.margin)}: {_p(e.p_tost_holm)} | {_verdict(e, provisional)} |")
    if not any(a.effects.values()):
        lines.append("| – | no axis has two levels with paired runs | – | – | – | – | – | – | – | – |")
    return lines + [""]


def _interaction_section(a: Analysis) -> list[str]:
    rows = [i for m in METRICS for i in a.interactions[m]]
    if not rows:
        return ["## Interactions", "", "No pair of axes has two levels each with paired runs: no interaction "
                "to estimate.", ""]
    lines = ["## Interactions (does one axis change another's effect?)", "",
             "Per seed (and value of any further axis): (a − b under c) − (a − b under d), the difference of "
             "differences; 0 means the a − b effect is the same under c and d. One-sample t-test against 0 and "
             "TOST against ± the metric's margin, each Holm-corrected over the interactions of one metric.", "",
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
    """The seed plan: what each contrast can detect after Holm with the seeds it has, from the pilot's SDs
    (its first seeds) and from all seeds; and, for the inconclusive ones, the seeds the observed
    difference would need."""
    rows = [e for m in METRICS for e in a.effects[m] if e.n_pairs >= 2]
    lines = ["## Seed plan and power", ""]
    if not rows:
        return lines + ["No contrast has two pairs: nothing to plan from.", ""]
    pilot = {(e.metric, e.axis, e.a, e.b): e for m in (a.pilot or {}) for e in a.pilot[m]}
    pilot_seeds = sorted({r.seed for r in a.runs})[:PILOT_SEEDS]
    lines += [("The seeds were planned from the pilot (seeds " + ", ".join(map(str, pilot_seeds)) + "): "
               if a.pilot else "") +
              "the smallest true difference a two-sided paired t-test detects with 80% power at the strictest Holm "
              "level (α / the contrasts of the metric), with the pairs each contrast has now, given the SD of "
              "its paired differences" + (" in the pilot and in all seeds" if a.pilot else "") + ". Exact "
              "noncentral-t power. Below the margin, a contrast that is not different can be shown equivalent; "
              "above it, “inconclusive” is the most the seeds can say. Last column: pairs (and seeds per cell) "
              "for 80% power at the observed difference, per test (planning numbers: the observed difference is "
              "itself uncertain).", "",
              "| metric | comparison | margin | pairs | " + ("SD, pilot | detectable, pilot SD | " if a.pilot else "")
              + "SD, all | detectable, all | needed for the observed difference |",
              "| --- | --- | --- | --- | " + ("--- | --- | " if a.pilot else "") + "--- | --- | --- |"]
    for e in rows:
        cells = [e.metric, f"{e.axis}: {e.a} − {e.b}", f"±{_num(e.margin)}", str(e.n_pairs)]
        if a.pilot:
            pe = pilot.get((e.metric, e.axis, e.a, e.b))
            sd = pe.contrast.sd if pe else math.nan
            mde = stats.min_detectable_difference(sd, e.n_pairs, alpha=ALPHA / max(1, e.family_size))
            cells += [_num(sd), "±" + _num(mde) if math.isfinite(mde) else "–"]
        mde = e.mde80_holm
        cells += [_num(e.contrast.sd), "±" + _num(mde) if math.isfinite(mde) else "–", _needed(e)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _variance_section(a: Analysis) -> list[str]:
    """Training-seed vs sampling spread, and the margins against them."""
    splits = [variance_split(a.runs, m) for m in METRICS]
    lines = ["## Which variance is it? (training seeds vs sampling)", ""]
    if not any(v.n_resampled for v in splits):
        return lines + ["No run has a second sampling seed yet (`python -m pipeline.resample --grid "
                        f"{a.grid}`): the spread between seeds cannot be split into training and sampling.", ""]
    lines += ["Each resampled generator drew its images again from a second latent seed "
              "(`python -m pipeline.resample`), evaluated the same way. Sampling SD: one generator's spread over "
              "latent seeds; seed SD: the spread between a cell's training seeds (first draws, pooled over "
              "cells), which includes the sampling part. A paired difference carries sampling noise of √2 × the "
              "sampling SD; the equivalence margin should sit well above it (a margin inside the sampling noise "
              "could never be shown) and below the effects that matter.", "",
              "| metric | runs resampled | sampling SD | seed SD | training part | seed SD / sampling SD | margin "
              "| margin / sampling SD of a difference |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for v in splits:
        margin = a.margin(v.metric)
        noise = math.sqrt(2) * v.sampling_sd
        lines.append(f"| {v.metric} | {v.n_resampled} | {_num(v.sampling_sd)} | {_num(v.seed_sd)} | "
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


def _replication_rows(pairs: list[Replicated], first: str, second: str) -> list[str]:
    lines = [f"| metric | comparison | {first} | {second} | same sign | same verdict | replicates |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for rp in pairs:
        def side(e: Effect) -> str:
            word = {"better": f"better: {e.better()}"}.get(e.verdict, e.verdict)
            return f"{_signed(e.mean_diff)} [{_num(e.contrast.ci95[0])}, {_num(e.contrast.ci95[1])}], {word}"
        lines.append(f"| {rp.first.metric} | {rp.first.axis}: {rp.first.a} − {rp.first.b} | {side(rp.first)} | "
                     f"{side(rp.second)} | {'yes' if rp.same_sign else 'no'} | {'yes' if rp.same_verdict else 'no'} | "
                     f"{'**yes**' if rp.replicates else 'no'} |")
    return lines


def _replication_section(a: Analysis) -> list[str]:
    lines = ["## Replication", "",
             "The same contrasts in an independent second grid (another machine or device) and in the two "
             "disjoint halves of this grid's seeds, each judged on its own (Holm within it). A contrast "
             "replicates when both have the same sign and the same verdict (for “better”, the same winner). "
             "With fewer seeds, a half has less power: an inconclusive half is no contradiction of a verdict.", ""]
    answered = False
    for grid, other in a.replications.items():
        if not other.runs:
            lines += [f"Grid `{grid}` (`ablation.replicate_with`): no finished runs in the store or in "
                      f"results/{grid}/.", ""]
            continue
        pairs = replicate({m: a.effects[m] for m in ANSWER_METRICS}, {m: other.effects[m] for m in ANSWER_METRICS})
        env = environment(other.runs)
        lines += [f"### `{a.grid}` vs `{grid}`", "",
                  f"`{grid}`: {len(other.runs)} runs, seeds {', '.join(map(str, other.seeds))}; "
                  f"{_shown(_values(other.runs, machine_of))}; torch {_shown(env['torch'])}.", ""]
        lines += _replication_rows(pairs, f"`{a.grid}`", f"`{grid}`")
        agree = sum(rp.replicates for rp in pairs)
        lines += ["", f"{agree} of {len(pairs)} contrasts replicate.", ""]
        answered = True
    halves = seed_halves(a.p, a.runs, a.axes)
    if halves:
        first, second, e1, e2 = halves
        pairs = replicate({m: e1[m] for m in ANSWER_METRICS}, {m: e2[m] for m in ANSWER_METRICS})
        lines += [f"### Seeds {first[0]}-{first[-1]} vs seeds {second[0]}-{second[-1]}", ""]
        lines += _replication_rows(pairs, f"seeds {', '.join(map(str, first))}", f"seeds {', '.join(map(str, second))}")
        lines += ["", f"{sum(rp.replicates for rp in pairs)} of {len(pairs)} contrasts replicate.", ""]
        answered = True
    if not answered:
        lines += ["No second grid (`ablation.replicate_with`) has runs, and the grid has fewer than 4 seeds: "
                  "nothing to compare.", ""]
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


def settled_sentence(st: Settled) -> str:
    """Whether the budget was long enough for the ranking to settle."""
    if not st.known:
        return "Whether the ranking settled cannot be told: fewer than two budgets have quick FIDs."
    ok = st.settled
    return (f"**The ranking {'had settled' if ok else 'had not settled'}** (the test: Kendall τ ≥ {SETTLED_TAU} between "
            f"the last two budgets, steps {st.steps[0]} and {st.steps[1]}: τ = {_num(st.tau_last_two)}; and the "
            f"same best cell over the last {SETTLED_SHARE:.0%} of training, from step {st.first_checked}: "
            f"{_short(st.best)} is best from step {st.best_since} on)"
            + ("." if ok else ": the verdicts are provisional; a longer budget could change them."))


def _ranking_section(a: Analysis) -> list[str]:
    lines = ["## Ranking over the training budget (quick FID)", ""]
    if not a.ranking:
        return lines + ["No quick-FID history (train.eval_every 0?): no ranking over budgets.", ""]
    steps = _budget_steps(sorted(a.ranking))
    final = a.ranking[max(a.ranking)]
    eval_n = _shown(_values(a.runs, _param("train.eval_n")))
    lines += [f"Mean quick FID over seeds (on {eval_n} samples, noisier than the final FID) and the rank "
              "among cells (#1 = lowest) at each budget. " + ranking_sentence(a.ranking) + " "
              + settled_sentence(a.settled), "",
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
    lines += _seeds_section(a)
    lines += _cell_table(a)
    lines += _effects_section(a)
    lines += _interaction_section(a)
    lines += _replication_section(a)
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
