"""The ablation report, built from the grid's run records alone (results/<grid>/ in git, pipeline.records:
each grid run writes its own, with its sample images beside it), so it regenerates from a fresh clone;
the MLflow store is never read (`python -m pipeline.records export` writes the records of older runs).

Writes `ablation.md`, `ablation.json` (the same numbers, machine-readable) and `ablation_files/`
(plots, sample images). The published grid (params `ablation.name`) goes to `reports/`; any other grid
(e.g. CI's `smoke`) to `reports/<name>/`, so it never replaces the published report.

The statistics (pipeline/stats.py), in the report's words:
- batches: runs grouped by what a pair must share (machine class, device, precision, training code, metrics
  code, evaluator; unrecorded fields their own value); the verdicts come from the newest complete batch;
- per cell: mean ± 95% t-interval over the primary batch's seeds, and as a multiple/share of its floor;
- per axis, every pair of levels as a contrast "a − b" with the seed as the unit (a seed's value is the
  mean of its pairs), paired t over seeds, Holm over all contrasts of one metric with Holm-consistent
  intervals, Lakens' four outcomes (with TOST against `ablation.margin`), P(a better) over seeds;
- per pair of axes, the interaction (difference of differences per seed), tested and Holm-corrected;
- the other batches and `ablation.replicate_with` grids as replications (prediction interval, Welch);
- the second evaluator: each FID and classifier-score contrast of the primary batch again under evaluator B
  (its `evaluator_b.*` figures of the same samples, the same code), and whether the verdict holds under both;
- "settled" per contrast: a drift TOST over full-size checkpoint evaluations (not measured without them);
  the quick-FID ranking per budget and the attention gammas are pictures;
- where each contrast settles: the main effects again at every budget the runs' full-size checkpoint
  evaluations cover, with each budget's drift (`budget`); a pilot's scan gives the grid's planned budget.

Orientation of "a − b": b is `none` when one level is (what the option adds over leaving it out);
otherwise a is the level params.yaml sets (the pipeline's choice against the alternative); otherwise a is
the level listed first in `ablation.axes`. With the default params: post − none, pre − none, post − pre,
hinge − bce.

ablation.json: floats are plain numbers, nan and inf are null; `ci95` is [low, high]; an environment
value is a string when all runs agree and a list of the distinct values when they do not.

The package, one idea per module: `runs` (GridRun; load_records from results/), `contrasts` (main
effects, interactions, their tests and verdicts, the settled test), `margins` (margins resolved, the
verdict at every margin), `batching` (batches, the primary one, replication),
`run_facts` (environment, wall times, real-data floor, machines), `variance` (training seeds vs sampling),
`budget` (a grid's budget, the budget scan), `analysis` (the Analysis of a grid: analyze ties the others
together), `second_evaluator` (the verdicts under evaluator B), `formatting` (numbers as text), `plots`
(figures), `markdown` (the page: its sections in order, render), the sections' text in `render_*`,
`json_summary` (ablation.json), `write` (report_dir, write_report, the command line; `python -m pipeline.report`).
"""
from pipeline.report.analysis import Analysis, analyze
from pipeline.report.batching import Batch, batches
from pipeline.report.contrasts import (ALPHA, CELL_METRICS, METRICS, Effect, Interaction, interactions, main_effects,
                                       oriented_pairs)
from pipeline.report.run_facts import environment, floor_metrics, wall_times
from pipeline.report.json_summary import summary
from pipeline.report.markdown import render, render_analysis
from pipeline.report.render_budget import MAX_BUDGET_COLUMNS, ranking_sentence
from pipeline.report.render_contrasts import ANSWER_METRICS
from pipeline.report.runs import GridRun, load_records
from pipeline.report.write import REPORT_DIR, main, report_dir, write_report
from pipeline.stats import t_interval  # also imported from here by callers

__all__ = [
    "ALPHA", "ANSWER_METRICS", "CELL_METRICS", "MAX_BUDGET_COLUMNS", "METRICS", "REPORT_DIR",
    "Analysis", "Effect", "GridRun", "Interaction",
    "analyze", "environment", "floor_metrics", "interactions", "load_records", "main", "main_effects",
    "oriented_pairs", "ranking_sentence", "render", "render_analysis", "report_dir", "summary", "t_interval",
    "wall_times", "write_report",
]
