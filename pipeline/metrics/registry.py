"""Every scalar metric of a generated set, once: its name, which way is better, and who uses it. The lists
the pipeline writes and reads are derived from this table: SCALARS (what evaluate_features computes, in
metrics/evaluator.json's order), DRAWN (averaged over evaluate.draws), COMPARED (the report's contrasts, with
their direction), IN_CELLS (the report's per-cell table); EVALUATE_ORDER is metrics/evaluate.json's order
(the answer first: `dvc exp show` lists a metrics file's keys in its order)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    better: str | None = None  # "lower" | "higher" for a quality; None: a standard error, a spread, a count
    drawn: bool = False        # the mean over evaluate.draws draws (the rest are the first draw's)
    compared: bool = False     # a contrast of the report (with its verdict at every margin)
    in_cells: bool = False     # a column of the report's per-cell table


REGISTRY = (
    Metric("fid", "lower", drawn=True, compared=True, in_cells=True),
    Metric("fid_se"),
    Metric("kid", "lower"),
    Metric("kid_se"),
    Metric("classifier_score", "higher", drawn=True, compared=True, in_cells=True),
    Metric("classifier_score_std"),
    Metric("precision", "higher", compared=True, in_cells=True),
    Metric("recall", "higher", compared=True, in_cells=True),
    Metric("density", "higher", in_cells=True),
    Metric("coverage", "higher", in_cells=True),
    Metric("classes_covered", "higher"),
)
BY_NAME = {m.name: m for m in REGISTRY}

SCALARS = tuple(m.name for m in REGISTRY)
DRAWN = tuple(m.name for m in REGISTRY if m.drawn)
COMPARED = {m.name: m.better for m in REGISTRY if m.compared}
IN_CELLS = {m.name: m.better for m in REGISTRY if m.in_cells}
# what only the mean over draws has, beyond SCALARS: the draws' standard error of a drawn metric, their count
DRAWS_ONLY = tuple(f"{m.name}_se" for m in REGISTRY if m.drawn and f"{m.name}_se" not in BY_NAME) + ("draws",)
EVALUATE_ORDER = ("fid", "fid_se", "classifier_score", "classifier_score_se", "precision", "recall", "kid", "kid_se",
                  "density", "coverage", "classifier_score_std")
