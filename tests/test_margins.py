"""The verdict at every margin (pipeline.report.margins): its thresholds against a contrast with a known interval,
and against the four-outcome verdict main_effects gives at random margins; margins in the units of the question
(a share of the reference cell's value or of its gap to the floor); what the runs recorded. Pure: no store."""
import math
import re

import numpy as np
import pytest
from scipy import stats as sps

from pipeline.config import Params, ShareMargin, with_override
from pipeline.report import GridRun, analyze, main_effects
from pipeline.report.analysis import margins_of
from pipeline.report.margins import as_recorded, margin_bands

AXES = {"attention.position": ["none", "pre", "post"], "loss.type": ["hinge", "bce"]}
CHOSEN = {"attention.position": "post", "loss.type": "hinge"}
CELL = "attention.position={},loss.type={}"


def _run(pos, loss, seed, metrics, params=None) -> GridRun:
    return GridRun(f"{pos}-{loss}-{seed}", CELL.format(pos, loss), seed, metrics,
                   {"attention.position": pos, "loss.type": loss, **(params or {})}, {})


def test_a_contrast_with_a_known_interval_gives_its_thresholds():
    """One contrast (one axis, two levels): Holm over a family of one is the test itself, so equivalence is shown
    exactly where the 90% t-interval lies inside ±m, the difference from the 95% interval's near end down."""
    diffs = np.array([1.9, 2.4, 1.2, 2.8, 2.0, 1.6])  # hinge − bce per seed: clearly different from 0
    runs = [r for s, d in enumerate(diffs) for r in (_run("post", "hinge", s, {"fid": 10 + s + d}),
                                                     _run("post", "bce", s, {"fid": 10.0 + s}))]
    (e,) = main_effects(runs, {"loss.type": ["hinge", "bce"]}, "fid", CHOSEN, margin=1.0)
    (band,) = margin_bands([e])
    n, mean, se = len(diffs), diffs.mean(), diffs.std(ddof=1) / math.sqrt(len(diffs))
    t90, t95 = sps.t.ppf(0.95, n - 1), sps.t.ppf(0.975, n - 1)
    assert band.significant and band.testable
    assert band.estimate == pytest.approx(mean) and band.matters_up_to == pytest.approx(mean)
    assert band.near == pytest.approx(mean - t95 * se)  # the Holm (here 95%) interval's end nearest 0
    assert band.equivalent_from == pytest.approx(mean + t90 * se, rel=1e-8)  # the 90% interval's far end
    assert [v for *_, v in band.bands(10.0)] == ["matters", "unclear size", "too small to matter"]
    # a non-significant contrast: inconclusive, then equivalent from the 90% interval's far end
    flat = diffs - mean + 0.1
    runs = [r for s, d in enumerate(flat) for r in (_run("post", "hinge", s, {"fid": 10 + s + d}),
                                                    _run("post", "bce", s, {"fid": 10.0 + s}))]
    (band,) = margin_bands(main_effects(runs, {"loss.type": ["hinge", "bce"]}, "fid", CHOSEN, margin=1.0))
    assert not band.significant and math.isnan(band.near)
    assert band.equivalent_from == pytest.approx(abs(flat.mean()) + t90 * se, rel=1e-8)
    assert [v for *_, v in band.bands(10.0)] == ["inconclusive", "equivalent"]


def _family_runs(seed: int = 7) -> list[GridRun]:
    """3 positions x 2 losses x 8 seeds: post and pre better than none by ~1.5 and ~0.6, hinge better than bce
    by ~0.3, seed noise of 0.6 per run and a seed term that pairs cancel."""
    rng = np.random.default_rng(seed)
    shift = {"none": 0.0, "pre": -0.6, "post": -1.5}
    return [_run(pos, loss, s, {"fid": 10 + shift[pos] + (0.0 if loss == "hinge" else 0.3) + 2 * s + rng.normal(0, 0.6)})
            for pos in AXES["attention.position"] for loss in AXES["loss.type"] for s in range(8)]


@pytest.mark.slow  # CPU-heavy (over 9 s of CPU on a Zen 3 core): `make test` runs it
def test_the_band_agrees_with_the_verdict_at_200_random_margins():
    runs = _family_runs()
    family = main_effects(runs, AXES, "fid", CHOSEN, margin=1.0)
    bands = margin_bands(family)
    assert [(b.a, b.b) for b in bands] == [(e.a, e.b) for e in family]
    # margins spread over the whole range, plus the thresholds themselves, just above and below
    rng = np.random.default_rng(0)
    margins = list(np.exp(rng.uniform(np.log(0.01), np.log(5.0), 200)))
    for b in bands:
        for t in (b.matters_up_to, b.equivalent_from):
            if math.isfinite(t):
                margins += [t * (1 - 1e-6), t * (1 + 1e-6)]
    seen = set()
    for m in margins:
        again = main_effects(runs, AXES, "fid", CHOSEN, margin=float(m))  # the normal analysis path
        for b, e in zip(bands, again):
            assert b.verdict_at(m) == e.verdict, (b.label, m, b)
            seen.add(e.verdict)
    assert {"matters", "unclear size", "too small to matter", "inconclusive", "equivalent"} <= seen


def test_untestable_contrasts_are_untestable_at_every_margin():
    runs = [_run(pos, loss, s, {"fid": 7.0}) for pos in ("none", "post") for loss in ("hinge",) for s in range(3)]
    (band,) = margin_bands(main_effects(runs, {"attention.position": ["none", "post"]}, "fid", CHOSEN, 1.0))
    assert not band.testable and band.verdict_at(0.5) == "untestable" and band.bands(1.0) == [(0.0, 1.0, "untestable")]


def _floor_runs(fid_of) -> list[GridRun]:
    return [_run(pos, loss, s, {"fid": fid_of(pos, loss, s), "classifier_score": 8.6 + 0.01 * s,
                                "floor.fid": 4.0, "floor.classifier_score": 9.2})
            for pos in AXES["attention.position"] for loss in AXES["loss.type"] for s in range(3)]


def test_a_share_margin_resolves_against_the_reference_cell_and_says_how():
    runs = _floor_runs(lambda pos, loss, s: 8.0 + s + (2.0 if pos == "none" else 0.0) + (0.5 if loss == "bce" else 0))
    ref = np.mean([8.0, 9.0, 10.0])  # post/hinge, the cell params.yaml sets
    p = with_override(Params(), {"ablation.margin.fid": {"share": 0.1, "of": "cell"},
                                 "ablation.margin.classifier_score": {"share": 0.1, "of": "gap"}})
    resolved = margins_of(p, AXES, runs)
    assert resolved["fid"].value == pytest.approx(0.1 * ref)
    assert resolved["fid"].reference_cell == CELL.format("post", "hinge")
    assert resolved["fid"].reference_value == pytest.approx(ref)
    # in words: the share and the reference cell's value it is a share of, and which cell
    how = resolved["fid"].how()
    assert CELL.format("post", "hinge") in how and re.findall(r"\d+(?:\.\d+)?", how) == ["10", "9.000"]
    assert resolved["classifier_score"].value == pytest.approx(0.1 * (9.2 - 8.61))  # of the gap to the floor
    assert resolved["precision"].value == 0.02 and resolved["precision"].how() == "absolute"
    # the analysis judges at the resolved margin, and a margin given to it (a replication's) wins
    a = analyze(p, "g", runs)
    assert a.margin("fid") == pytest.approx(0.1 * ref)
    assert all(e.margin == pytest.approx(0.1 * ref) for e in a.effects["fid"])
    other = analyze(p, "other", _floor_runs(lambda pos, loss, s: 30.0 + s + (pos == "none")), margins=a.margins)
    assert other.margin("fid") == pytest.approx(0.1 * ref)


def test_a_plain_number_stays_absolute():
    p = with_override(Params(), {"ablation.margin.fid": 3})
    assert p.ablation.margin.fid == 3.0 and isinstance(Params().ablation.margin.fid, ShareMargin)
    assert margins_of(p, AXES, _floor_runs(lambda *_: 9.0))["fid"].value == 3.0


def test_the_runs_recorded_margins_are_compared_with_the_configured_ones():
    p = with_override(Params(), {"ablation.name": "g", "ablation.margin.fid": 3.0})
    stale = [_run("post", "hinge", s, {"fid": 9.0}, {"ablation.name": "default", "ablation.steps": "5000",
                                                      "ablation.margin.fid": "3.0"}) for s in range(2)]
    rec = as_recorded(p, stale, ["fid"])
    assert not rec.own_block("g") and rec.same_margins()
    own = [_run("post", "hinge", s, {"fid": 9.0}, {"ablation.name": "g",
                                                    "ablation.margin.fid": '{"share": 0.1, "of": "cell"}'})
           for s in range(2)]
    rec = as_recorded(p, own, ["fid"])
    assert rec.own_block("g") and not rec.same_margins()  # they started at 10% of the cell, not ±3
    assert as_recorded(with_override(p, {"ablation.margin.fid": {"share": 0.1, "of": "cell"}}), own,
                       ["fid"]).same_margins()
