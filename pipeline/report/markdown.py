"""The report's markdown page: its sections in order (render_analysis), and render. The sections' text is in
render_answer (Answer), render_setup (Setup, Where each seed ran, Metrics per cell), render_batches (Batches,
Replication, Which variance is it?), render_contrasts (Main effects, Verdict at every margin, Interactions,
Seed plan and power), render_budget (Where each contrast settles, Ranking over the training budget),
render_second_evaluator (Second evaluator) and render_generators (Attention usage, Samples)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pipeline.config import Params
from pipeline.report.analysis import Analysis, analyze
from pipeline.report.formatting import _slug
from pipeline.report.plots import _plots
from pipeline.report.render_answer import _answer
from pipeline.report.render_batches import _batches_section, _replication_section, _variance_section
from pipeline.report.render_budget import _budget_section, _ranking_section
from pipeline.report.render_contrasts import _effects_section, _interaction_section, _margin_section, _power_section
from pipeline.report.render_generators import _gamma_section, _samples
from pipeline.report.render_second_evaluator import _second_evaluator_section
from pipeline.report.render_setup import _cell_table, _header, _seeds_section
from pipeline.report.runs import GridRun


def render_analysis(a: Analysis, out: Path, previous: Path | None = None) -> str:
    """The markdown of `a`; plots and sample images (from beside the runs' records, else kept from
    `previous`, the last render's ablation_files/) are written to `out`, which the markdown links as
    ablation_files/ (relative to the markdown file)."""
    lines = [f"# Ablation report: grid `{a.grid}`", ""]
    if not a.runs:
        return "\n".join(lines + [
            f"No run records of grid `{a.grid}` (results/{_slug(a.grid)}/).", "",
            "Run the grid first: `make grid` (or `python -m pipeline.grid run`); its runs write their records as "
            "they finish."]) + "\n"
    lines += [f"Built from {len(a.runs)} runs (experiment `{a.p.mlflow.experiment}`, tag `grid.name = {a.grid}`: "
              f"their run records in results/{_slug(a.grid)}/); regenerate with "
              f"`python -m pipeline.report --grid {a.grid}`.", "",
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
    lines += _samples(a, out, previous)
    return "\n".join(lines) + "\n"


def render(p: Params, grid: str, runs: list[GridRun], out: Path,
           expected_seeds: Sequence[int] | None = None) -> str:
    """The markdown report of `runs`; see render_analysis."""
    return render_analysis(analyze(p, grid, runs, expected_seeds), out)
