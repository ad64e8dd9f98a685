"""The report's Setup (the grid, its budget, machines, versions, floor and wall times), Where each seed ran and
Metrics per cell sections."""
from __future__ import annotations

import math

from pipeline.report.analysis import Analysis
from pipeline.report.contrasts import CELL_METRICS, METRICS
from pipeline.report.formatting import _duration, _fmt, _num, _shown
from pipeline.report.run_facts import _param, _tag, _values, environment, floor_metrics, seeds_ran_on, wall_times
from pipeline.stats import t_interval


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
