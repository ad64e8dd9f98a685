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
from pipeline.report.analysis import (ALPHA, CELL_METRICS, METRICS, Analysis, Effect, _final_gamma, _param, _tag,
                                      _values, analyze, environment, floor_metrics, wall_times)
from pipeline.report.formatting import _ci, _duration, _fmt, _num, _p, _short, _shown, _signed, _slug
from pipeline.report.plots import _plots
from pipeline.report.runs import GridRun
from pipeline.stats import t_interval

ANSWER_METRICS = {"fid": "FID", "classifier_score": "classifier score"}
MAX_BUDGET_COLUMNS = 6


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
