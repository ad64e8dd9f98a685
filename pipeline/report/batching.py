"""Batches and replication: the runs grouped by what a pair must share (Batch, batches: pipeline.provenance's
BATCH_FIELDS), the batch the verdicts come from (primary_batch), and each contrast of another batch or grid
against the primary's (Replication, replicate: prediction interval, heterogeneity, pooling)."""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from pipeline import stats
from pipeline.provenance import BATCH_FIELDS, UNRECORDED, batch_key_of_tags
from pipeline.report.contrasts import ALPHA, Effect, Interaction
from pipeline.report.runs import GridRun


def batch_key(r: GridRun) -> tuple[str, ...]:
    """What the runs of a pair must share (BATCH_FIELDS): machine class (CPU design and class, or GPU),
    device, precision, training code (training_code of its commit), metrics code version and evaluator
    checksum (pipeline.provenance)."""
    return batch_key_of_tags(r.tags)


@dataclass
class Batch:
    """Seeds whose runs share a batch_key; within a batch pairs are comparable. `mixed`: the key names
    more than one value of a field (seeds whose own runs differ): never the primary."""
    key: tuple[str, ...]
    seeds: list[int]
    runs: list[GridRun]
    complete: bool  # every seed has every expected cell
    newest_ms: int  # the latest run start (0 where no run recorded one)
    commits: list[str]
    mixed: bool = False
    effects: dict[str, list[Effect]] = field(default_factory=dict)
    interactions: dict[str, list["Interaction"]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"seeds {_seed_span(self.seeds)}"

    def describe(self) -> str:
        machine, device, precision, code, metrics, evaluator = self.key
        commits = ", ".join(c[:7] for c in self.commits) if self.commits else UNRECORDED
        return (f"{machine}; {device}, {precision}; training code {code} (commits {commits}); metrics code "
                f"{metrics if metrics == UNRECORDED else 'v' + metrics}; evaluator {evaluator}")


def _seed_span(seeds: Sequence[int]) -> str:
    s = sorted(seeds)
    if s and s == list(range(s[0], s[-1] + 1)) and len(s) > 2:
        return f"{s[0]}-{s[-1]}"
    return ", ".join(map(str, s))


def batches(runs: list[GridRun], cells: Sequence[str]) -> list[Batch]:
    """The runs grouped into batches by seed: a seed's key is its runs' batch_key (joined field by field
    where they differ, which marks the batch mixed). Oldest first (by newest run start)."""
    by_seed: dict[int, list[GridRun]] = defaultdict(list)
    for r in runs:
        by_seed[r.seed].append(r)
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    mixed: set[tuple[str, ...]] = set()
    for seed, seed_runs in sorted(by_seed.items()):
        keys = sorted({batch_key(r) for r in seed_runs})
        key = tuple(" + ".join(sorted({k[i] for k in keys})) for i in range(len(BATCH_FIELDS)))
        groups[key].append(seed)
        if len(keys) > 1:
            mixed.add(key)
    out = []
    for key, seeds in groups.items():
        rs = [r for s in seeds for r in by_seed[s]]
        complete = all({r.cell for r in by_seed[s]} >= set(cells) for s in seeds)
        newest = max((r.start_ms or 0) for r in rs)
        commits = sorted({r.tags["git.commit"] for r in rs if r.tags.get("git.commit")})
        out.append(Batch(key, seeds, rs, complete, newest, commits, key in mixed))
    return sorted(out, key=lambda b: (b.newest_ms, len(b.seeds), b.seeds))


def primary_batch(found: list[Batch]) -> Batch | None:
    """The batch the verdicts come from: the newest complete, unmixed batch of at least two seeds; else
    the unmixed batch with the most seeds (newest on a tie); else the newest of any."""
    if not found:
        return None
    ok = [b for b in found if b.complete and not b.mixed and len(b.seeds) >= 2]
    if ok:
        return max(ok, key=lambda b: (b.newest_ms, len(b.seeds)))
    unmixed = [b for b in found if not b.mixed]
    return max(unmixed or found, key=lambda b: (len(b.seeds), b.newest_ms))


# ---------------------------------------------------------------- replication


@dataclass
class Replication:
    """One contrast in the primary batch and in another batch (or grid). It agrees when its estimate lies
    in the primary's prediction interval for a batch of its size (stats.replication_interval), not when
    its verdict matches (a small batch is inconclusive by construction). Heterogeneity: Welch's t on the
    two batches' per-seed values (stats.heterogeneity). Pooled (all seeds of both, the seed the unit)
    only where the two agree and no heterogeneity is found."""
    primary: Effect
    other: Effect

    @property
    def interval(self) -> tuple[float, float]:
        return stats.replication_interval(self.primary.per_seed, self.other.n_seeds)

    @property
    def agrees(self) -> bool | None:
        """None where the primary cannot give an interval (a contrast of fewer than 2 seeds)."""
        lo, hi = self.interval
        if math.isnan(lo) or math.isnan(hi) or math.isnan(self.other.mean_diff):
            return None
        return bool(lo <= self.other.mean_diff <= hi)

    @property
    def p_heterogeneity(self) -> float:
        return stats.heterogeneity(self.primary.per_seed, self.other.per_seed)

    @property
    def heterogeneous(self) -> bool:
        return self.p_heterogeneity < ALPHA

    @property
    def pooled(self) -> stats.Contrast | None:
        if not self.agrees or self.heterogeneous or math.isnan(self.p_heterogeneity):
            return None
        return stats.one_sample_contrast([*self.primary.per_seed, *self.other.per_seed])


def replicate(first: Mapping[str, list[Effect]], second: Mapping[str, list[Effect]]) -> list[Replication]:
    """The contrasts that both have, paired by metric, axis and levels, in the first's order."""
    index = {(e.metric, e.axis, e.a, e.b): e for m in second for e in second[m]}
    return [Replication(e, index[e.metric, e.axis, e.a, e.b]) for m in first for e in first[m]
            if (e.metric, e.axis, e.a, e.b) in index]
