"""How the report writes values as text: numbers, intervals, p-values, durations, cell names, file names, and
values the runs disagree on."""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

from pipeline import stats


def _shown(counts: Counter, width: int | None = None) -> str:
    """'value', or 'v1 (12 runs), v2 (6 runs)' when runs disagree; a missing value shows as '?'."""
    def one(v: Any) -> str:
        s = "?" if v in (None, "") else str(v)
        return s[:width] if width and s != "?" else s

    if len(counts) == 1:
        return one(next(iter(counts)))
    return ", ".join(f"{one(v)} ({n} runs)" for v, n in counts.most_common())


def _num(x: float | None) -> str:
    """3 decimals; 3 significant digits where 3 decimals would show a nonzero value as 0.000."""
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:.3g}" if 0 < abs(x) < 0.0005 else f"{x:.3f}"


def _fmt(mean: float, hw: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{_num(mean)} ± {_num(hw)}" if not math.isnan(hw) else f"{_num(mean)} (n=1)"


def _signed(x: float) -> str:
    return _num(x) if not math.isfinite(x) or x < 0 else "+" + _num(x)


def _p(p: float) -> str:
    return "–" if math.isnan(p) else f"{p:.3g}"


def _ci(c: stats.Contrast) -> str:
    lo, hi = c.ci95
    return "no interval" if math.isnan(lo) else f"95% CI {_num(lo)} to {_num(hi)}"


def _duration(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {s % 60:.0f} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def _short(cell: str) -> str:
    return " / ".join(part.split("=", 1)[1] for part in cell.split(",") if "=" in part) or cell


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", s)
