"""Which variance is it? A metric's spread between training seeds split into its sampling part (a second draw of
each generator, or the runs' own standard errors) and the rest (VarianceSplit, variance_split)."""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from pipeline.report.runs import GridRun


@dataclass
class VarianceSplit:
    """A metric's spread between a cell's training seeds against the spread of one generator's samples."""
    metric: str
    n_resampled: int  # runs with a second sampling seed (pipeline.resample)
    sampling_sd: float  # SD of the metric over latent seeds, one generator: sqrt(mean((x1 - x2)^2) / 2)
    seed_sd: float  # pooled SD within cells over training seeds (first draws; sampling noise included)
    source: str = "resample"  # "resample": a second draw of each generator; "se": each run's own standard error

    @property
    def training_sd(self) -> float:
        """The seed-to-seed SD with the sampling part taken out (0 where sampling explains all of it)."""
        if not (math.isfinite(self.seed_sd) and math.isfinite(self.sampling_sd)):
            return math.nan
        return math.sqrt(max(0.0, self.seed_sd ** 2 - self.sampling_sd ** 2))

    @property
    def ratio(self) -> float:
        return self.seed_sd / self.sampling_sd if self.sampling_sd > 0 else math.nan


def variance_split(runs: list[GridRun], metric: str) -> VarianceSplit:
    """The sampling SD from a second draw of each generator (pipeline.resample) where runs have one, else from
    the runs' own standard errors (metrics version 3: `<metric>_se` of the mean over evaluate.draws draws; their
    root mean square), so that it is the noise of the metric as the runs report it."""
    pairs = [(r.metrics[metric], r.metrics[f"resample.{metric}"]) for r in runs
             if metric in r.metrics and f"resample.{metric}" in r.metrics]
    sampling = math.sqrt(sum((a - b) ** 2 for a, b in pairs) / (2 * len(pairs))) if pairs else math.nan
    source = "resample"
    ses = [r.metrics[f"{metric}_se"] for r in runs if math.isfinite(r.metrics.get(f"{metric}_se", math.nan))]
    if not pairs and ses:
        pairs, sampling, source = ses, math.sqrt(float(np.mean(np.square(ses)))), "se"
    by_cell: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        if metric in r.metrics:
            by_cell[r.cell].append(r.metrics[metric])
    ss = sum(float(np.sum((np.array(v) - np.mean(v)) ** 2)) for v in by_cell.values() if len(v) > 1)
    dof = sum(len(v) - 1 for v in by_cell.values() if len(v) > 1)
    return VarianceSplit(metric, len(pairs), sampling, math.sqrt(ss / dof) if dof else math.nan, source)
