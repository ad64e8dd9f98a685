"""The report's figures (matplotlib, Agg backend): metrics per cell, quick FID and rank over the training
budget, attention gammas over training."""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from pipeline.report.analysis import Analysis
from pipeline.report.contrasts import METRICS
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


BAND_COLORS = {"matters": "#d62728", "unclear size": "#ff9f40", "too small to matter": "#8fb9de",
               "equivalent": "#2ca02c", "inconclusive": "#c7c7c7", "untestable": "#ffffff"}


def margin_axis_end(bands, margin: float) -> float:
    """Where a margin figure's x axis ends: past every finite threshold and the configured margin."""
    ends = [x for b in bands for x in (b.equivalent_from, abs(b.estimate)) if math.isfinite(x)]
    ends += [margin] if math.isfinite(margin) else []
    return 1.25 * max(ends) if ends and max(ends) > 0 else 1.0


def margin_plot(a: Analysis, out: Path, metrics=None, name: str = "margins.png") -> str | None:
    """One panel per metric, one row per contrast: its verdict at every margin (x) as coloured bands, the
    configured margin a vertical line, the near end of a significant contrast's Holm interval a tick."""
    metrics = [m for m in (metrics or METRICS) if a.bands.get(m)]
    if not metrics:
        return None
    plt = _plt()
    from matplotlib.patches import Patch

    cols = min(2, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    height = max(len(a.bands[m]) for m in metrics)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, (0.45 * height + 1.3) * rows), squeeze=False)
    seen: dict[str, str] = {}
    for ax, metric in zip(axes.flat, metrics):
        bands, margin = a.bands[metric], a.margin(metric)
        end = margin_axis_end(bands, margin)
        for row, band in enumerate(bands):
            y = len(bands) - 1 - row
            for lo, hi, verdict in band.bands(end):
                ax.barh(y, hi - lo, left=lo, height=0.7, color=BAND_COLORS[verdict], edgecolor="none")
                seen.setdefault(verdict, BAND_COLORS[verdict])
            if math.isfinite(band.near):
                ax.plot([band.near], [y], marker="|", color="black", markersize=14, mew=1.5)
        if math.isfinite(margin):
            ax.axvline(margin, color="black", ls="--", lw=1.2)
            ax.text(margin, len(bands) - 0.45, f" configured ±{margin:.3g}", fontsize=7, va="bottom")
        ax.set_yticks(range(len(bands)))
        ax.set_yticklabels([f"{b.label} ({b.estimate:+.3g})" for b in reversed(bands)], fontsize=8)
        ax.set_xlim(0, end)
        ax.set_ylim(-0.6, len(bands) - 0.1)
        ax.set_xlabel(f"margin (± {metric})", fontsize=8)
        ax.set_title(f"{metric}: the verdict at every margin", fontsize=9)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    handles = [Patch(color=c, label=v) for v, c in BAND_COLORS.items() if v in seen]
    handles.append(plt.Line2D([], [], color="black", marker="|", ls="none", markersize=10,
                              label="Holm interval's near end: a difference for margins up to it"))
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.1 if rows == 1 else 0.06, 1, 1))
    fig.savefig(out / name, dpi=90)
    plt.close(fig)
    return name
