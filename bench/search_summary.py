"""The recipe search's table: bench_quality.py's JSON files (one per candidate and seed) summarised with the
seed as the unit. Each (candidate, sampler variant, step) gets the mean over seeds of FID, classifier score,
precision and recall with a 95% t-interval, and the paired difference from the reference (same seeds) with
its own interval: a candidate beats the reference only where that interval excludes 0.

    python bench/search_summary.py ../search/*.json --reference default:sampler:10000
    python bench/search_summary.py ../search/*.json --reference default:sampler   # paired at each step
    python bench/search_summary.py results/search/*.json --markdown     # the table docs/experiments.md shows

A file's candidate is its name without `.s<seed>.json` (`lecam0.3.s1.json` -> `lecam0.3`).
"""
from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

METRICS = ("fid", "classifier_score", "precision", "recall")


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of its t-interval (nan half-width for one value)."""
    x = np.asarray(values, float)
    if len(x) < 2:
        return float(x.mean()), float("nan")
    return float(x.mean()), float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))


def batch_key(record: dict) -> str:
    """The machine class, device and precision a file's runs share (files before bench_quality recorded it:
    'unrecorded'). Seeds from two batches are never paired or pooled."""
    b = record.get("batch")
    return f"{b['class']} {b['device']} {b['precision']}" if b else "unrecorded"


def load(paths: list[Path]) -> dict[tuple[str, str, int], dict[int, dict]]:
    """(candidate, variant, step) -> seed -> row, from files of one batch."""
    out: dict[tuple[str, str, int], dict[int, dict]] = defaultdict(dict)
    records = {path: json.loads(path.read_text()) for path in paths}
    batches = defaultdict(list)
    for path, record in records.items():
        batches[batch_key(record)].append(path.name)
    if len(batches) > 1:
        listing = "; ".join(f"{k}: {', '.join(v[:3])}{' ...' if len(v) > 3 else ''}" for k, v in batches.items())
        raise SystemExit(f"these files come from {len(batches)} batches ({listing}): summarise one at a time")
    for path, record in records.items():
        candidate = re.sub(r"\.s\d+\.json$", "", path.name)
        for row in record["rows"]:
            out[(candidate, row["variant"], int(row["step"]))][int(row["seed"])] = row
    return out


def fmt(mean: float, half: float, digits: int) -> str:
    return f"{mean:.{digits}f}" if np.isnan(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--reference", default="default:sampler", help="CANDIDATE:VARIANT[:STEP] (without a "
                    "step: the reference at each row's own step)")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    data = load(args.files)
    rc, rv, *rs = args.reference.split(":")
    digits = {"fid": 2, "classifier_score": 2, "precision": 3, "recall": 3}
    header = ["candidate", "variant", "step", "seeds"] + [*METRICS] + [f"Δ{m}" for m in METRICS] + ["img/s"]
    lines = []
    for (cand, variant, step), by_seed in sorted(data.items()):
        seeds = sorted(by_seed)
        cells = [cand, variant, str(step), ",".join(map(str, seeds))]
        for m in METRICS:
            cells.append(fmt(*t_interval([by_seed[s][m] for s in seeds]), digits[m]))
        ref_step = int(rs[0]) if rs else step
        ref = data.get((rc, rv, ref_step), {})
        paired = [s for s in seeds if s in ref]
        for m in METRICS:
            if (cand, variant, step) == (rc, rv, ref_step) or not paired:
                cells.append("")
                continue
            cells.append(fmt(*t_interval([by_seed[s][m] - ref[s][m] for s in paired]), digits[m]))
        cells.append(f"{np.mean([by_seed[s]['images_per_s'] for s in seeds]):.0f}")
        lines.append(cells)
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for cells in lines:
            print("| " + " | ".join(cells) + " |")
    else:
        widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
        for cells in [header, *lines]:
            print("  ".join(c.ljust(w) for c, w in zip(cells, widths)))


if __name__ == "__main__":
    main()
