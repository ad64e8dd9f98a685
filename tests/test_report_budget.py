"""Whether the contrasts had settled when training stopped (a drift test on full-size checkpoint evaluations),
where each contrast settles over a pilot's budgets (the budget scan and the planned budget), a longer
replication grid read at the primary's budget, and the quick-FID ranking over the budget: the analysis,
ablation.json and the rendered sections read back as tables and numbers (test_report's readers)."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
from test_report import P, _bullets, _effect, _full_runs, _nums, _page, _sections, _table

from pipeline.config import with_override
from pipeline.report import GridRun, analyze, summary
from pipeline.report.formatting import _signed
from pipeline.report.render_budget import ranking_holds, ranking_sentence


# ---------------------------------------------------------------- the quick-FID ranking over the budget


def test_the_final_ranking_against_the_earlier_budgets():
    final = ["a", "b", "c"]
    r = ranking_holds({1: final, 2: final})
    assert (r.final, r.holds_at, r.since, r.best_at) == (2, [1], 1, [1])
    # step 1 has another order, steps 2 and 3 the final one's; the best cell is best from step 2
    r = ranking_holds({1: ["b", "a", "c"], 2: ["a", "b", "c"], 3: final})
    assert (r.final, r.earlier, r.holds_at, r.since, r.best, r.best_at) == (3, [1, 2], [2], 2, "a", [2])
    # only the cells a budget shares with the final one count: step 1 lacks b and still holds
    r = ranking_holds({1: ["a", "c"], 2: ["c", "a"], 3: final})
    assert (r.holds_at, r.since, r.best_at) == ([1], 3, [1])
    assert ranking_holds({5: final}) is None
    # the sentence says which steps: the final one, where it holds from, where it differs
    said = ranking_sentence({1: ["b", "a", "c"], 2: ["a", "b", "c"], 3: final})
    assert {1, 2, 3} <= set(_nums(said)) and ranking_sentence({5: final}) != ranking_sentence({1: final, 2: final})


# ---------------------------------------------------------------- settled: a drift test, not a ranking


def _with_curves(still_falling: bool) -> list[GridRun]:
    """Full-size FIDs at 3000, 4000, 5000: post − none stopped (constant), or still falling (post's FID falls 2
    per 1,000 steps up to step 5000: −4 over the window), with noise."""
    out, rng = _full_runs(), np.random.default_rng(2)
    for r in out:
        slope = -2.0 if (still_falling and r.params["attention.position"] == "post") else 0.0
        r.metric_curves = {"fid": [(s, r.metrics["fid"] + slope * (s - 5000) / 1000 + rng.normal(0, 0.05))
                                   for s in (3000, 4000, 5000)]}
    return out


def _settled_groups(answer: str) -> dict[str, str]:
    """The Answer's last bullet, on whether each contrast had settled: status -> what it names."""
    return dict(re.findall(r"\*\*(settled|still moving|not testable at this noise|not measured)\*\*: ([^*]+)",
                           _bullets(answer)[-1]))


@pytest.mark.slow  # CPU-heavy (over 9 s of CPU on a Zen 3 core): `make test` runs it
def test_settled_is_a_drift_test_on_full_size_checkpoints_not_a_ranking(tmp_path):
    runs = _full_runs()
    assert summary(analyze(P, "default", runs))["contrasts"][0]["settled"]["settled"] is None
    settled = _effect(analyze(P, "default", _with_curves(False)).effects["fid"], "attention.position", "post", "none")
    assert settled.drift.settled is True and settled.drift.steps == (3000, 4000, 5000)
    moving = _effect(analyze(P, "default", _with_curves(True)).effects["fid"], "attention.position", "post", "none")
    assert moving.drift.settled is False and moving.drift.drift.mean == pytest.approx(-4.0, abs=0.2)
    # ablation.json and the Answer: each FID / classifier-score contrast under its status, with its drift
    (tmp_path / "moving").mkdir()
    page = _page(_with_curves(True), tmp_path / "moving")
    row = page.data["contrasts"][0]
    assert (row["a"], row["b"], row["settled"]["settled"], row["settled"]["status"]) == ("post", "none", False,
                                                                                          "still moving")
    assert row["settled"]["steps"] == [3000, 4000, 5000] and "3000-5000" in _bullets(page.sections["Answer"])[-1]
    groups = _settled_groups(page.sections["Answer"])
    assert f"FID post − none (drift {_signed(row['settled']['mean_drift'])}" in groups["still moving"]
    (tmp_path / "settled").mkdir()
    page = _page(_with_curves(False), tmp_path / "settled")
    assert page.data["contrasts"][0]["settled"]["status"] == "settled"
    assert "FID post − none" in _settled_groups(page.sections["Answer"])["settled"]


# ---------------------------------------------------------------- the budget scan


PILOT_STEPS = (8000, 10000, 12000, 15000, 18000, 21000, 24000)


def _pilot_runs(post_keeps_falling: bool = False) -> list[GridRun]:
    """A pilot at 24,000 steps with full-size evaluations at PILOT_STEPS: hinge's extra FID over bce shrinks
    to 0 by step 12,000 (8 at 8k, 4 at 10k); post − none is the design's (about −9) throughout, or also falls 0.5 FID per 1,000
    steps throughout (still moving at every budget); the classifier score does not move."""
    out, rng = _full_runs(), np.random.default_rng(3)
    for r in out:
        hinge = r.params["loss.type"] == "hinge"
        post = r.params["attention.position"] == "post"
        def fid(s):
            extra = max(0, 12000 - s) / 500 if hinge else 0.0
            fall = -0.5 * (s - 24000) / 1000 if (post and post_keeps_falling) else 0.0
            return r.metrics["fid"] + extra + fall + rng.normal(0, 0.05)
        r.params["train.steps"] = "24000"
        r.metric_curves = {"fid": [(s, fid(s)) for s in PILOT_STEPS],
                           "classifier_score": [(s, r.metrics["classifier_score"] + rng.normal(0, 0.005))
                                                for s in PILOT_STEPS]}
    return out


def test_the_budget_scan_finds_where_each_contrast_settles_and_the_planned_budget(tmp_path):
    a = analyze(P, "default", _pilot_runs())
    scan = a.budget_scan
    # a budget needs >= 3 checkpoints in its last 40%: 8k and 10k have fewer
    assert scan.budgets == [12000, 15000, 18000, 21000, 24000] and scan.floor == 12000
    loss = next(c for c in scan.contrasts if (c.metric, c.a, c.b) == ("fid", "hinge", "bce"))
    at = {p.budget: p for p in loss.points}
    # at 12k the effect is gone, but its window (8k-12k) still holds the fall from 8 to 0: drift ≈ −8
    assert at[12000].effect.mean_diff == pytest.approx(0, abs=0.1)
    assert at[12000].drift.drift.mean == pytest.approx(-8, abs=0.2) and at[12000].within is False
    assert at[15000].within is False and at[18000].within and at[24000].within
    assert at[24000].drift.steps == (15000, 18000, 21000, 24000)
    assert loss.settles_at == 18000
    position = next(c for c in scan.contrasts if (c.metric, c.a, c.b) == ("fid", "post", "none"))
    final = _effect(a.effects["fid"], "attention.position", "post", "none").mean_diff  # from the runs' metrics
    assert position.settles_at == 12000 and position.points[0].effect.mean_diff == pytest.approx(final, abs=0.1)
    assert scan.planned == 18000
    data = summary(a)["budget_scan"]
    assert data["planned"] == 18000 and data["budgets"] == scan.budgets
    row = next(c for c in data["contrasts"] if (c["metric"], c["a"], c["b"]) == ("fid", "hinge", "bce"))
    assert row["settles_at"] == 18000 and row["points"][0]["within_half_margin"] is False
    # the section: a row per contrast, a column per budget (its mean difference first), where it settles
    from pipeline.report import render_analysis

    section = _sections(render_analysis(a, tmp_path))["Where each contrast settles"]
    table = _table(section)
    assert table.header == ["metric", "comparison", "margin/2", *(f"{b:,}" for b in scan.budgets), "settles at"]
    assert len(table.rows) == len(data["contrasts"])
    shown = table.row(metric="FID", comparison="hinge − bce")
    assert _nums(shown["margin/2"]) == [pytest.approx(row["margin"] / 2)] == [1.5]
    assert [_nums(shown[f"{p['budget']:,}"])[0] for p in row["points"]] == [
        pytest.approx(p["mean_diff"], abs=5e-4) for p in row["points"]]
    assert _nums(shown["settles at"]) == [18000]
    assert re.findall(r"\*\*(.+?)\*\*", section)[-1] == f"{scan.planned:,} steps"  # the planned budget


def test_a_contrast_still_moving_at_the_largest_budget_leaves_no_planned_budget(tmp_path):
    from pipeline.report import render_analysis

    a = analyze(P, "default", _pilot_runs(post_keeps_falling=True))
    position = next(c for c in a.budget_scan.contrasts if (c.metric, c.a, c.b) == ("fid", "post", "none"))
    # −0.5 per 1,000 steps over 24k's window (15k-24k): drift −4.5, outside ±1.5
    assert position.points[-1].drift.drift.mean == pytest.approx(-4.5, abs=0.2) and position.settles_at is None
    assert a.budget_scan.planned is None and summary(a)["budget_scan"]["planned"] is None
    section = _sections(render_analysis(a, tmp_path))["Where each contrast settles"]
    assert _nums(_table(section).row(metric="FID", comparison="post − none")["settles at"]) == []
    assert not re.search(r"\d", re.findall(r"\*\*(.+?)\*\*", section)[-1])  # no planned budget


def test_no_budget_scan_without_checkpoints_at_several_budgets(tmp_path):
    from pipeline.report import render_analysis

    a = analyze(P, "default", _full_runs())
    assert a.budget_scan is None and summary(a)["budget_scan"] is None
    assert "Where each contrast settles" not in _sections(render_analysis(a, tmp_path))


def _write_records(runs: list[GridRun], grid: str, results: Path) -> None:
    from pipeline.records import write_record

    (results / grid).mkdir(parents=True, exist_ok=True)
    for r in runs:
        curves = {"fid_quick": r.fid_curve, **r.gamma_curves, **{f"full.{m}": c for m, c in r.metric_curves.items()}}
        write_record({"schema": 1, "grid": grid, "cell": r.cell, "seed": r.seed, "run_id": f"{grid}-{r.run_id}",
                      "params": r.params, "metrics": r.metrics, "tags": r.tags, "curves": curves,
                      "start_ms": r.start_ms, "end_ms": r.end_ms}, results / grid)


def test_a_longer_replication_grid_is_compared_at_the_primary_budget(tmp_path, monkeypatch):
    from pipeline.report import write_report
    from pipeline.report.budget import runs_at_budget

    pilot = _pilot_runs()
    at = runs_at_budget(pilot, 12000)
    assert [r.metrics["fid"] for r in at] == [dict(r.metric_curves["fid"])[12000] for r in pilot]
    assert at[0].params["train.steps"] == "12000" and at[0].tags["budget.read_at"] == "12000"
    assert "floor.fid" in at[0].metrics and "final.wall_s" not in at[0].metrics  # the floor stays, the rest goes
    assert runs_at_budget(pilot, 11000) is None and runs_at_budget(_full_runs(), 5000) is None
    # the published grid at 12,000 steps, the pilot (24,000) as its replication: read at step 12,000
    primary = _full_runs()
    for r in primary:
        r.params["train.steps"] = "12000"
    p = with_override(P, {"ablation.replicate_with": ["pilot"]})
    results = tmp_path / "results"
    _write_records(primary, p.ablation.name, results)
    _write_records(pilot, "pilot", results)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'no-store' / 'mlflow.db'}")
    text = write_report(p, out_dir=tmp_path / "reports", results=results).read_text()
    data = json.loads((tmp_path / "reports" / "ablation.json").read_text())
    (other,) = data["replication"]
    assert other["other"].startswith("`pilot`") and 12000 in _nums(other["other"]) and other["runs"] == len(pilot)
    # the Replication section compares the primary with the pilot as read there
    headings = re.findall(r"^### (.+)$", _sections(text)["Replication"], re.M)
    assert headings == [f"seeds 0-2 (primary) vs {other['other']}"]
    # at step 12,000 the pilot's runs are the primary's design plus checkpoint noise: every FID contrast agrees
    fid = [c for c in other["contrasts"] if c["metric"] == "fid"]
    assert fid and all(c["agrees"] and c["other"]["mean_diff"] == pytest.approx(c["primary"]["mean_diff"], abs=0.2)
                       for c in fid)
