"""The ablation report, built from the grid's MLflow runs alone (so it regenerates from the store).

Per metric: mean ± 95% t-interval per cell. Main effects per axis: paired differences across seeds
(pairing runs that share the other axes' values and the seed), a paired t-test, and a plain
"not significant at 5%" where that is the truth.
"""
from __future__ import annotations

import itertools
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline import tracking
from pipeline.config import Params
from pipeline.fileio import atomic_dir

log = logging.getLogger("report")

REPORT_DIR = Path("reports")
METRICS = {"fid": "lower", "classifier_score": "higher", "precision": "higher", "recall": "higher"}


@dataclass
class GridRun:
    run_id: str
    cell: str
    seed: int
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    fid_curve: list[tuple[int, float]] = field(default_factory=list)

    def axis(self, key: str) -> str:
        return self.params.get(key, "?")


def load_runs(p: Params, grid: str) -> list[GridRun]:
    """The latest finished, evaluated run of each cell x seed of `grid`."""
    import mlflow

    exp_id = tracking.setup(p.mlflow.experiment)
    client = mlflow.MlflowClient(tracking.tracking_uri())
    found = client.search_runs([exp_id], f"tags.`grid.name` = '{grid}' and attributes.status = 'FINISHED'",
                               max_results=5000, order_by=["attributes.start_time DESC"])
    runs: dict[tuple[str, int], GridRun] = {}
    for r in found:
        key = (r.data.tags.get("grid.cell", ""), int(r.data.tags.get("grid.seed", -1)))
        if "fid" not in r.data.metrics or key in runs:
            continue
        curve = [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, "fid_quick")]
        runs[key] = GridRun(r.info.run_id, key[0], key[1], dict(r.data.metrics), dict(r.data.params),
                            dict(r.data.tags), sorted(curve))
    return sorted(runs.values(), key=lambda g: (g.cell, g.seed))


def t_interval(values: list[float]) -> tuple[float, float, int]:
    """(mean, half-width of the 95% t-interval, n); the half-width is nan below two values."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    if n < 2:
        return float(v.mean()) if n else math.nan, math.nan, n
    return float(v.mean()), float(stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n)), n


@dataclass
class Effect:
    axis: str
    a: str
    b: str
    metric: str
    mean_diff: float
    half_width: float
    n_pairs: int
    p_value: float

    @property
    def significant(self) -> bool:
        return not math.isnan(self.p_value) and self.p_value < 0.05


def main_effects(runs: list[GridRun], axes: list[str], metric: str) -> list[Effect]:
    """For each axis and pair of its levels: paired differences a - b over runs that share the
    other axes' values and the seed, with a paired t-test (scipy.stats.ttest_rel)."""
    from scipy import stats

    out = []
    for axis in axes:
        others = [x for x in axes if x != axis]
        by_key: dict[tuple, dict[str, float]] = defaultdict(dict)
        for r in runs:
            key = tuple(r.axis(o) for o in others) + (r.seed,)
            by_key[key][r.axis(axis)] = r.metrics[metric]
        levels = sorted({r.axis(axis) for r in runs})
        for a, b in itertools.combinations(levels, 2):
            pairs = [(v[a], v[b]) for v in by_key.values() if a in v and b in v]
            if not pairs:
                continue
            xa, xb = np.array(pairs).T
            mean, hw, n = t_interval(list(xa - xb))
            if n >= 2 and np.ptp(xa - xb) > 0:
                p = float(stats.ttest_rel(xa, xb).pvalue)
            else:
                p = math.nan
            out.append(Effect(axis, a, b, metric, mean, hw, n, p))
    return out


def _fmt(mean: float, hw: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.3f} ± {hw:.3f}" if not math.isnan(hw) else f"{mean:.3f} (n=1)"


def _plots(runs: list[GridRun], cells: list[str], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6))
    for ax, metric in zip(axes, METRICS):
        stats_ = [t_interval([r.metrics[metric] for r in runs if r.cell == c]) for c in cells]
        means = [s[0] for s in stats_]
        errs = [0 if math.isnan(s[1]) else s[1] for s in stats_]
        ax.errorbar(range(len(cells)), means, yerr=errs, fmt="o", capsize=4)
        for i, c in enumerate(cells):
            ys = [r.metrics[metric] for r in runs if r.cell == c]
            ax.scatter([i] * len(ys), ys, s=8, color="gray", alpha=0.6)
        ax.set_xticks(range(len(cells)))
        ax.set_xticklabels([_short(c) for c in cells], rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{metric} ({METRICS[metric]} is better)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "metrics.png", dpi=90)
    plt.close(fig)
    names.append("metrics.png")

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for c in cells:
        curves = [r.fid_curve for r in runs if r.cell == c and r.fid_curve]
        if not curves:
            continue
        steps = sorted({s for cv in curves for s, _ in cv})
        mean = [np.mean([v for cv in curves for s2, v in cv if s2 == s]) for s in steps]
        ax.plot(steps, mean, marker="o", label=_short(c))
    ax.set_xlabel("training step")
    ax.set_ylabel("quick FID (mean over seeds)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "fid_over_training.png", dpi=90)
    plt.close(fig)
    names.append("fid_over_training.png")
    return names


def _short(cell: str) -> str:
    return " / ".join(part.split("=", 1)[1] for part in cell.split(",") if "=" in part) or cell


def _median_run(runs: list[GridRun]) -> GridRun:
    ordered = sorted(runs, key=lambda r: r.metrics["fid"])
    return ordered[(len(ordered) - 1) // 2]


def render(p: Params, grid: str, runs: list[GridRun], out: Path) -> str:
    import mlflow

    axes = list(p.ablation.axes)
    lines = [f"# Ablation report: grid `{grid}`", ""]
    if not runs:
        lines += [f"No finished runs of grid `{grid}` in the MLflow store ({tracking.tracking_uri()}).",
                  "", "Run the grid first: `make grid` (or `python -m pipeline.grid run`)."]
        return "\n".join(lines) + "\n"
    cells = sorted({r.cell for r in runs})
    first = runs[0]
    lines += [
        f"Built from {len(runs)} MLflow runs (experiment `{p.mlflow.experiment}`, tag `grid.name = {grid}`); "
        f"regenerate with `python -m stages.report` or `python -m pipeline.report --grid {grid}`.", "",
        "| setting | value |", "| --- | --- |",
        f"| data source | {first.tags.get('data.source', '?')} (sha256 `{first.tags.get('data.sha256', '?')[:12]}…`) |",
        f"| budget | {first.params.get('train.steps', '?')} generator steps, batch {first.params.get('train.batch_size', '?')}, "
        f"{first.params.get('evaluate.n_samples', '?')} samples evaluated |",
        f"| seeds per cell | {', '.join(str(s) for s in sorted({r.seed for r in runs}))} |",
        f"| versions | torch {first.tags.get('version.torch', '?')}, dvc {first.tags.get('version.dvc', '?')}, "
        f"mlflow {first.tags.get('version.mlflow', '?')}, python {first.tags.get('python', '?')} |", "",
    ]
    floor = {m: first.metrics.get(f"floor.{m}") for m in METRICS}
    lines += ["## Metrics per cell (mean ± 95% t-interval over seeds)", "",
              "| cell | n | " + " | ".join(f"{m} ({METRICS[m]} better)" for m in METRICS) + " |",
              "| --- | --- | " + " | ".join("---" for _ in METRICS) + " |"]
    best = {}
    for c in cells:
        row = [t_interval([r.metrics[m] for r in runs if r.cell == c]) for m in METRICS]
        lines.append(f"| {c} | {row[0][2]} | " + " | ".join(_fmt(s[0], s[1]) for s in row) + " |")
        for m, s in zip(METRICS, row):
            sign = 1 if METRICS[m] == "lower" else -1
            if m not in best or sign * s[0] < sign * best[m][1]:
                best[m] = (c, s[0])
    lines.append("| real data (floor: held-out vs training) | – | " +
                 " | ".join("–" if floor[m] is None else f"{floor[m]:.3f}" for m in METRICS) + " |")
    lines += ["", "Best configuration by mean: " +
              "; ".join(f"**{m}**: {best[m][0]}" for m in METRICS) + ".", ""]

    lines += ["## Main effects (paired differences across seeds, paired t-test)", "",
              "Each difference pairs two runs that share the seed and the values of the other axes.", "",
              "| axis | comparison | metric | mean difference ± 95% CI | pairs | p-value | verdict |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for m in METRICS:
        for e in main_effects(runs, axes, m):
            if math.isnan(e.p_value) and e.n_pairs >= 2:
                # ttest_rel is undefined when every pair differs by the same amount (often 0)
                verdict = "no variation across pairs: no test"
            elif math.isnan(e.p_value):
                verdict = "too few pairs to test"
            elif e.significant:
                winner = e.a if (e.mean_diff < 0) == (METRICS[m] == "lower") else e.b
                verdict = f"significant at 5%: {winner} is better"
            else:
                verdict = "not significant at 5%"
            lines.append(f"| {e.axis} | {e.a} − {e.b} | {m} | {_fmt(e.mean_diff, e.half_width)} | {e.n_pairs} | "
                         f"{'–' if math.isnan(e.p_value) else f'{e.p_value:.3g}'} | {verdict} |")
    lines += ["", "## Plots", ""]
    for name in _plots(runs, cells, out):
        lines.append(f"![{name}](ablation_files/{name})")
    lines += ["", "## Samples and attention of each cell's median-seed run (by FID)", ""]
    client = mlflow.MlflowClient(tracking.tracking_uri())
    for c in cells:
        med = _median_run([r for r in runs if r.cell == c])
        lines += [f"### {c}", "", f"seed {med.seed}, FID {med.metrics['fid']:.3f}, run `{med.run_id}`", ""]
        for art in ("grid.png", "attention.png"):
            try:
                local = client.download_artifacts(med.run_id, f"samples/{art}", str(out))
            except Exception:  # noqa: BLE001 - a run without attention (position none) has no map
                continue
            target = out / f"{_slug(c)}-{art}"
            Path(local).replace(target)
            lines.append(f"![{c} {art}](ablation_files/{target.name})")
        lines.append("")
    return "\n".join(lines) + "\n"


def _slug(s: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_-]+", "_", s)


def write_report(p: Params, grid: str | None = None, out_dir: Path = REPORT_DIR) -> Path:
    grid = grid or p.ablation.name
    runs = load_runs(p, grid)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out_dir / "ablation_files") as files:
        text = render(p, grid, runs, files)
        for leftover in files.glob("samples"):
            import shutil

            shutil.rmtree(leftover, ignore_errors=True)
    from pipeline.fileio import write_text

    write_text(out_dir / "ablation.md", text)
    summary = {"grid": grid, "runs": len(runs), "cells": sorted({r.cell for r in runs})}
    from pipeline.fileio import write_json

    write_json(out_dir / "ablation.json", summary)
    log.info("wrote %s from %d runs", out_dir / "ablation.md", len(runs))
    return out_dir / "ablation.md"


if __name__ == "__main__":
    import argparse

    from pipeline.config import load_params

    logging.basicConfig(level=logging.INFO, format="%(asctime)s report: %(message)s", datefmt="%H:%M:%S")
    ap = argparse.ArgumentParser(prog="python -m pipeline.report")
    ap.add_argument("--grid", help="grid name (default: ablation.name)")
    args = ap.parse_args()
    write_report(load_params(), args.grid)
