"""The report's sections on batches: Batches (what a pair shares, which batch is primary), Replication (the other
batches and grids against the primary) and Which variance is it? (training seeds vs sampling, per batch)."""
from __future__ import annotations

import math

from pipeline.provenance import BATCH_FIELDS
from pipeline.report.analysis import Analysis
from pipeline.report.batching import replicate
from pipeline.report.contrasts import ALPHA, METRICS
from pipeline.report.formatting import _fmt, _num, _p, _signed
from pipeline.report.render_contrasts import ANSWER_METRICS
from pipeline.report.run_facts import floor_metrics
from pipeline.report.variance import variance_split

_AGREES = {True: "**yes**", False: "no", None: "– (primary: < 2 seeds)"}


def _batches_section(a: Analysis) -> list[str]:
    """The batches: what their pairs share, their seeds, their floor; which is primary."""
    lines = ["## Batches", "",
             "A batch is the seeds whose runs share what a pair must share: " + ", ".join(BATCH_FIELDS) + " (the "
             "training code of a commit is the code its train, sample and evaluate stages import, less what only logs, "
             "records or draws (pipeline/provenance.py); a field a run did not record is its own value, `unrecorded`). The verdicts "
             "come from the newest complete batch; the others are replications (next section), never pooled "
             "unchecked. Each batch's real-data floor is its own (its evaluator's).", "",
             "| batch | runs | role | complete | " + " | ".join(BATCH_FIELDS) + " | floor FID | floor classifier score |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in BATCH_FIELDS) + " | --- | --- |"]
    for b in a.batches:
        floor = floor_metrics(b.runs)
        key = list(b.key)
        key[3] += f" ({', '.join(c[:7] for c in b.commits)})" if b.commits else ""
        role = "**primary**" if b is a.primary else ("mixed: never primary" if b.mixed else "replication")
        lines.append(f"| {b.label} | {len(b.runs)} | {role} | {'yes' if b.complete else 'no'} | " + " | ".join(key)
                     + f" | {_num(floor.get('fid'))} | {_num(floor.get('classifier_score'))} |")
    return lines + [""]


def _replication_section(a: Analysis) -> list[str]:
    lines = ["## Replication (other batches and grids against the primary)", "",
             "Each other batch of this grid, and each `ablation.replicate_with` grid's primary batch, against the "
             "primary batch, contrast by contrast (FID and classifier score). A replication **agrees** when its "
             "estimate lies in the primary's 95% prediction interval for the mean of a new batch of that many "
             "seeds (mean ± t · SD · √(1/n + 1/n_new): where it should fall if the batches differ only by seed "
             "noise), not when its verdict matches: a 3-seed batch is inconclusive by construction. "
             "Heterogeneity: Welch's t-test of batch × contrast on the two batches' per-seed values (p < "
             f"{ALPHA}: the contrast differs between the batches). Pooled over both batches' seeds only where "
             "the replication agrees and no heterogeneity is found; the verdicts stay the primary's.", ""]
    others = a.others()
    if a.primary is None or not others:
        missing = [g for g, o in a.replications.items() if not o.runs]
        return lines + ["One batch and no second grid with runs: nothing to compare"
                        + (f" (`{'`, `'.join(missing)}`: no run records in results/)" if missing
                           else "") + ".", ""]
    for name, b in others:
        pairs = replicate({m: a.effects[m] for m in ANSWER_METRICS}, {m: b.effects[m] for m in ANSWER_METRICS})
        lines += [f"### {a.primary.label} (primary) vs {name}", "", f"{name}: {len(b.runs)} runs; {b.describe()}.", "",
                  f"| metric | comparison | primary ({len(a.primary.seeds)} seeds) | {name} ± 95% CI | prediction "
                  "interval | agrees | heterogeneity p | pooled ± 95% CI |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for rp in pairs:
            lo, hi = rp.interval
            pooled = rp.pooled
            lines.append(f"| {rp.primary.metric} | {rp.primary.axis}: {rp.primary.a} − {rp.primary.b} | "
                         f"{_signed(rp.primary.mean_diff)} | {_fmt(rp.other.mean_diff, rp.other.half_width)} | "
                         f"[{_num(lo)}, {_num(hi)}] | {_AGREES[rp.agrees]} | "
                         f"{_p(rp.p_heterogeneity)}{' (**differs**)' if rp.heterogeneous else ''} | "
                         f"{_fmt(pooled.mean, pooled.half_width) + f' ({pooled.n} seeds)' if pooled else '–'} |")
        agree = sum(rp.agrees is True for rp in pairs)
        untested = sum(rp.agrees is None for rp in pairs)
        het = [f"{rp.primary.metric} {rp.primary.a} − {rp.primary.b}" for rp in pairs if rp.heterogeneous]
        lines += ["", f"{agree} of {len(pairs) - untested} contrasts agree"
                  + (f" ({untested} not testable: the primary has fewer than 2 seeds of them)" if untested else "")
                  + "; heterogeneity found for "
                  + (", ".join(het) if het else "none") + ".", ""]
    return lines


def _variance_section(a: Analysis) -> list[str]:
    """Training-seed vs sampling spread, and the margins against them."""
    lines = ["## Which variance is it? (training seeds vs sampling, per batch)", ""]
    splits = [(b, variance_split(b.runs, m)) for b in a.batches for m in METRICS]
    if not any(v.n_resampled for _, v in splits):
        return lines + ["No run has a second sampling seed yet (`python -m pipeline.resample --grid "
                        f"{a.grid}`): the spread between seeds cannot be split into training and sampling.", ""]
    lines += ["Per batch: both SDs come from the same runs (a batch without resampled runs has no split). " + "Each resampled generator drew its images again from a second latent seed "
              "(`python -m pipeline.resample`), evaluated the same way; runs of metrics version 3 carry their own "
              "standard error instead (the mean over `evaluate.draws` draws: FID's by the delta method, the "
              "classifier score's over the draws; source `se`), the sampling SD is then their root mean square. "
              "Sampling SD: one generator's spread over "
              "latent seeds; seed SD: the spread between a cell's training seeds (first draws, pooled over "
              "cells), which includes the sampling part. A paired difference carries sampling noise of √2 × the "
              "sampling SD; the equivalence margin should sit well above it (a margin inside the sampling noise "
              "could never be shown) and below the effects that matter.", "",
              "| batch | metric | runs resampled (or with an SE) | sampling SD | seed SD | training part | "
              "seed SD / sampling SD | margin | margin / sampling SD of a difference |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for b, v in splits:
        if not v.n_resampled:
            continue
        margin = a.margin(v.metric)
        noise = math.sqrt(2) * v.sampling_sd
        lines.append(f"| {b.label} | {v.metric} | {v.n_resampled}{' (SE)' if v.source == 'se' else ''} | {_num(v.sampling_sd)} | {_num(v.seed_sd)} | "
                     f"{_num(v.training_sd)} | {_num(v.ratio)} | ±{_num(margin)} | "
                     f"{_num(margin / noise) if noise > 0 else '–'} |")
    return lines + [""]
