"""How many seeds does a grid need for 80% power at its margins, under a given instrument?

    python bench/seeds_for_power.py                        # reports/ablation.json, sampling SD as measured
    python bench/seeds_for_power.py --sampling-sd fid=0.78:0.2 classifier_score=0.027:0.01 \\
        --margin fid=0.9 classifier_score=0.05

From a report's per-seed contrast values (the seed as the unit: a seed's value is the mean of its pairs),
each contrast's seed SD is split into training and sampling variance: a seed's value averages
P = n_pairs / n_seeds pairs a − b, each run carrying independent sampling noise of SD s, so sampling
adds 2 s² / P to the seed variance. `--sampling-sd metric=OLD:NEW` replaces the old instrument's s
(the report's variance split: a second sampling seed of the same generators) by the new one's; the
training part stays. Then, per contrast, at the strictest Holm level of its family (alpha / k):
- equivalence: seeds for the TOST to show a true difference of 0 within ±margin with 80% power;
- difference: seeds for the two-sided t-test to detect a true difference of one margin with 80% power.
The grid needs the largest of them (and no fewer than 10, the project's rule for a published verdict).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline import stats  # noqa: E402

METRICS = ("fid", "classifier_score")
MIN_SEEDS = 10


def tost_seeds(margin: float, sd: float, alpha: float, power: float = stats.POWER, cap: int = 10_000) -> int:
    n = 2
    while stats.tost_power(margin, sd, n, alpha=alpha) < power:
        n += 1
        if n > cap:
            return cap
    return n


def pairs(arg: list[str]) -> dict[str, str]:
    """METRIC=VALUE arguments -> {metric: value}."""
    return {k: v for k, v in (a.split("=", 1) for a in arg)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report", type=Path, default=Path("reports/ablation.json"))
    ap.add_argument("--sampling-sd", nargs="*", default=[], metavar="METRIC=OLD:NEW",
                    help="per-run sampling SD of the report's instrument and of the new one")
    ap.add_argument("--margin", nargs="*", default=[], metavar="METRIC=VALUE",
                    help="absolute margins (default: each contrast's margin in the report)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    report = json.loads(args.report.read_text())
    sampling = {k: tuple(float(x) for x in v.split(":")) for k, v in pairs(args.sampling_sd).items()}
    margins = {k: float(v) for k, v in pairs(args.margin).items()}
    rows = []
    for metric in METRICS:
        family = [c for c in report["contrasts"] if c["metric"] == metric]
        alpha = stats.ALPHA / max(1, len(family))
        for c in family:
            sd = float(c["sd_seeds"])
            p = c["n_pairs"] / c["n_seeds"]
            old, new = sampling.get(metric, (0.0, 0.0))
            var = sd ** 2 - 2 * old ** 2 / p + 2 * new ** 2 / p
            sd_new = math.sqrt(max(var, 0.0))
            margin = margins.get(metric, c["margin"])
            eq = tost_seeds(margin, sd_new, alpha)
            diff = int(stats.pairs_needed(margin, sd_new, alpha=alpha))
            rows.append({"metric": metric, "contrast": f"{c['a']} − {c['b']}", "sd_seeds": sd,
                         "sampling_share": 2 * old ** 2 / p / sd ** 2, "sd_new": sd_new, "margin": margin,
                         "alpha": alpha, "seeds_equivalence": eq, "seeds_difference": diff})
    print(f"{args.report}: seeds for 80% power at the strictest Holm level of each family")
    print("| metric | contrast | seed SD | of it sampling | SD, new instrument | margin | equivalence | difference |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['metric']} | {r['contrast']} | {r['sd_seeds']:.3f} | {r['sampling_share']:.0%} | {r['sd_new']:.3f} "
              f"| ±{r['margin']:.3g} | {r['seeds_equivalence']} | {r['seeds_difference']} |")
    need = max(MIN_SEEDS, *(max(r["seeds_equivalence"], r["seeds_difference"]) for r in rows))
    print(f"seeds a grid needs: {need}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "seeds": need}, indent=1))


if __name__ == "__main__":
    main()
