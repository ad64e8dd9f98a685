"""The report's figures (matplotlib, Agg backend): metrics per cell, quick FID and rank over the training
budget, attention gammas over training."""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from pipeline.report.analysis import METRICS, Analysis
from pipeline.report.formatting import _short
from pipeline.stats import t_interval


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mean_curve(curves: list[list[tuple[int, float]]]) -> tuple[list[int], list[float]]:
    by_step: dict[int, list[float]] = defaultdict(list)
    for curve in curves:
        for step, value in curve:
            by_step[step].append(value)
    steps = sorted(by_step)
    return steps, [float(np.mean(by_step[s])) for s in steps]


def _plots(a: Analysis, out: Path) -> list[str]:
    plt = _plt()
    runs, cells = a.runs, a.cells
    color = {c: f"C{i % 10}" for i, c in enumerate(cells)}  # one colour per cell in every plot
    names = []
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6))
    for ax, metric in zip(axes, METRICS):
        per_cell = [[r.metrics[metric] for r in runs if r.cell == c and metric in r.metrics] for c in cells]
        stats_ = [t_interval(v) for v in per_cell]
        errs = [0 if math.isnan(s[1]) else s[1] for s in stats_]
        ax.errorbar(range(len(cells)), [s[0] for s in stats_], yerr=errs, fmt="o", capsize=4)
        for i, ys in enumerate(per_cell):
            ax.scatter([i] * len(ys), ys, s=8, color="gray", alpha=0.6)
        ax.set_xticks(range(len(cells)))
        ax.set_xticklabels([_short(c) for c in cells], rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{metric} ({METRICS[metric]} is better)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "metrics.png", dpi=90)
    plt.close(fig)
    names.append("metrics.png")

    if a.ranking:
        fig, (ax_fid, ax_rank) = plt.subplots(1, 2, figsize=(11, 4))
        for c in cells:
            steps = [s for s in a.quick_fid if c in a.quick_fid[s]]
            if not steps:
                continue
            ax_fid.plot(steps, [a.quick_fid[s][c] for s in steps], marker="o", color=color[c], label=_short(c))
            ax_rank.plot(steps, [a.ranking[s].index(c) + 1 for s in steps], marker="o", color=color[c])
        ax_fid.set_xlabel("training step")
        ax_fid.set_ylabel("quick FID (mean over seeds)")
        ax_fid.legend(fontsize=7)
        ax_rank.set_xlabel("training step (budget)")
        ax_rank.set_ylabel("rank by quick FID (1 = best)")
        ax_rank.invert_yaxis()
        ax_rank.set_yticks(range(1, len(cells) + 1))
        fig.tight_layout()
        fig.savefig(out / "ranking_over_budget.png", dpi=90)
        plt.close(fig)
        names.append("ranking_over_budget.png")

    if a.gamma_layers:
        fig, axes = plt.subplots(1, len(a.gamma_layers), figsize=(4.5 * len(a.gamma_layers), 3.6), squeeze=False)
        for ax, layer in zip(axes[0], a.gamma_layers):
            for c in cells:
                # |gamma|: its sign is arbitrary (the value projection flips with it), seeds would cancel
                curves = [[(step, abs(g)) for step, g in r.gamma_curves[layer]]
                          for r in runs if r.cell == c and r.gamma_curves.get(layer)]
                if curves:
                    ax.plot(*_mean_curve(curves), color=color[c], label=_short(c))
            ax.axhline(0, color="gray", lw=0.5)
            ax.set_title(f"|{layer}| (mean over seeds)", fontsize=9)
            ax.set_xlabel("training step")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "gamma_over_training.png", dpi=90)
        plt.close(fig)
        names.append("gamma_over_training.png")
    return names
