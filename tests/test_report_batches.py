"""Batches and the verdicts' other judges: a grid split into batches by what a pair must share, the machine
each seed ran on, the other batches and grids as replications of the primary batch, and the second
evaluator; the analysis, ablation.json and the rendered sections read back as tables and numbers
(test_report's readers)."""
import json
import re
from dataclasses import replace

import numpy as np
import pytest
from test_report import P, _as_shown, _effect, _full_runs, _nums, _page, _sections, _table, _tables

from pipeline.report import analyze, render, render_analysis, summary
from pipeline.report.batching import replicate
from pipeline.report.formatting import _p
from pipeline.report.render_batches import _AGREES
from pipeline.report.render_contrasts import VERDICT_WORDS
from pipeline.report.second_evaluator import NOT_MEASURED_B, second_evaluator


# ---------------------------------------------------------------- batches and replication


def _replication_rows(section: str) -> dict[str, list[dict[str, str]]]:
    """The Replication section: each `###` comparison -> its table's rows."""
    parts = re.split(r"^### (.+)$", section, flags=re.M)
    return {title: _table(body).rows for title, body in zip(parts[1::2], parts[2::2])}


@pytest.mark.slow  # CPU-heavy (over 9 s of CPU on a Zen 3 core): `make test` runs it
def test_batches_split_a_grid_and_a_second_batch_with_the_opposite_effect_is_heterogeneous(tmp_path):
    """Seeds 0-2: a pilot on another machine with metrics v1 where post lowers FID by 9; seeds 3-8: the
    newer batch where post raises it by 5. The verdict is the new batch's; the pilot is a replication that
    disagrees (outside the prediction interval) with heterogeneity found; they are not pooled."""
    rng = np.random.default_rng(5)
    new = []
    for k in (1, 2):
        for r in _full_runs(fid=lambda pos, loss, seed: 60 + 3 * seed + (5 if pos == "post" else 0)
                            + rng.normal(0, 0.3)):
            new.append(replace(r, seed=r.seed + 3 * k, run_id=f"{r.run_id}-{k}",
                               metrics={**r.metrics, "floor.fid": 2.5},
                               start_ms=r.start_ms + 10**9, tags={**r.tags, "git.commit": "feedface"}))
    pilot = _full_runs()
    for r in pilot:
        r.tags = {k: v for k, v in r.tags.items() if k not in ("git.commit", "metrics.version")}
        r.tags["machine.gpu"] = "A100"
    page = _page(pilot + new, tmp_path, expected_seeds=list(range(9)))
    a, data = page.a, page.data
    assert [b.seeds for b in a.batches] == [[0, 1, 2], [3, 4, 5, 6, 7, 8]]
    assert a.primary.seeds == [3, 4, 5, 6, 7, 8] and a.batches[0].key[3] == a.batches[0].key[4] == "unrecorded"
    post_none = _effect(a.effects["fid"], "attention.position", "post", "none")
    assert post_none.n_seeds == 6 and post_none.mean_diff == pytest.approx(5.0, abs=0.5)
    rep = next(rp for rp in replicate(a.effects, a.batches[0].effects)
               if (rp.primary.metric, rp.primary.a, rp.primary.b) == ("fid", "post", "none"))
    assert rep.other.mean_diff < -8 and not rep.agrees and rep.heterogeneous and rep.pooled is None
    # ablation.json: the batch split, the primary's floor, the replication's row
    assert data["primary_batch"] == [3, 4, 5, 6, 7, 8] and data["floor"]["fid"] == 2.5
    assert [(b["seeds"], b["runs"], b["primary"], b["complete"]) for b in data["batches"]] == [
        ([0, 1, 2], 18, False, True), ([3, 4, 5, 6, 7, 8], 36, True, True)]
    (other,) = data["replication"]
    row = next(c for c in other["contrasts"] if (c["metric"], c["a"], c["b"]) == ("fid", "post", "none"))
    assert row["heterogeneous"] and not row["agrees"] and row["pooled"] is None
    # the Batches table: a row per batch with its role, its key (the machine column is the GPU alone), its floor
    table = _table(page.sections["Batches"])
    assert table.column("batch") == [b.label for b in a.batches] == ["seeds 0-2", "seeds 3-8"]
    for shown, b in zip(table.rows, data["batches"]):
        assert _nums(shown["runs"]) == [b["runs"]] and ("primary" in shown["role"]) == b["primary"]
        assert shown["machine"] == b["key"]["machine"] and shown["complete"] == ("yes" if b["complete"] else "no")
        assert _nums(shown["floor FID"]) == [_as_shown(b["floor"]["fid"])]
    assert table.column("machine") == ["A100", "H100"] and table.column("floor FID") == ["1.250", "2.500"]
    # the Replication section: the pilot against the primary, the contrast flagged as differing
    rows = _replication_rows(page.sections["Replication"])
    assert list(rows) == [f"{a.primary.label} (primary) vs {other['other']}"]
    (pilot_rows,) = rows.values()
    shown = next(r for r in pilot_rows if r["metric"] == "fid" and r["comparison"].endswith("post − none"))
    assert shown["agrees"] == _AGREES[False] and _nums(shown["heterogeneity p"])[0] == _as_shown(row["p_heterogeneity"])
    assert shown["heterogeneity p"] != _p(row["p_heterogeneity"]) and shown["pooled ± 95% CI"] == "–"  # flagged
    # a replication grid (replicate_with) with the same effect agrees, whatever its verdict
    same = [replace(r, run_id=f"{r.run_id}-h") for r in new if r.seed < 6]
    a.replications["default-h200"] = analyze(P, "default-h200", same)
    rep = next(rp for name, b in a.others() if name.startswith("`default-h200`")
               for rp in replicate(a.effects, b.effects) if (rp.primary.metric, rp.primary.a) == ("fid", "post"))
    assert rep.agrees and not rep.heterogeneous and rep.pooled is not None


def test_seeds_table_names_the_machine_each_seed_ran_on(tmp_path):
    runs = _full_runs()
    for r in runs:
        if r.seed == 2:
            r.tags.update({"runtime.device": "cpu", "machine.cpu_uarch": "AMD Zen 5 (family 26 model 2)",
                           "machine.cpu_class": "avx512"})
    r = next(r for r in runs if r.seed == 1)
    r.tags["runtime.precision"] = "fp32"
    page = _page(runs, tmp_path)
    section = page.sections["Where each seed ran"]
    table = _table(section)
    assert table.row(seed="0") == {"seed": "0", "runs": "6", "machine; device, precision": "H100; cuda, bf16",
                                   "metrics code": "version 2", "evaluator": "`feedbeefcafe`"}
    assert table.row(seed="2")["machine; device, precision"] == "AMD Zen 5 (family 26 model 2), avx512; cpu, bf16"
    # seed 1 ran on two machines: both in its row and in ablation.json, and flagged under the table
    machines = page.data["seeds_ran_on"]["1"]
    assert sorted(machines) == ["H100; cuda, bf16", "H100; cuda, fp32"] and sum(machines.values()) == 6
    assert all(m in table.row(seed="1")["machine; device, precision"] for m in machines)
    (flag,) = re.findall(r"^\*\*(.+?)\*\*", section, re.M)
    assert _nums(flag) == [1]


def test_a_primary_of_one_seed_cannot_say_whether_a_replication_agrees(tmp_path):
    """A grid still growing (one seed so far) has no prediction interval: the replication's row says so
    instead of "no", and the count leaves those contrasts out."""
    runs = _full_runs()
    a = analyze(P, "default", [r for r in runs if r.seed == 0], expected_seeds=[0])
    a.replications["pilot"] = analyze(P, "pilot", [r for r in runs if r.seed > 0])
    (name, b), = [(n, b) for n, b in a.others() if n.startswith("`pilot`")]
    assert all(rp.agrees is None and rp.pooled is None for rp in replicate(a.effects, b.effects))
    assert all(c["agrees"] is None for c in summary(a)["replication"][0]["contrasts"])
    section = _sections(render_analysis(a, tmp_path))["Replication"]
    (rows,) = _replication_rows(section).values()
    # every row says it cannot tell, which is neither a yes nor a no
    assert len(rows) == 8 and {r["agrees"] for r in rows} == {_AGREES[None]}
    assert _AGREES[None] not in (_AGREES[True], _AGREES[False])
    # the count: 0 of 0 agree, 8 not testable
    count = section.rstrip().splitlines()[-1]
    assert _nums(count)[:3] == [0, 0, 8]


def test_a_shorter_replication_grid_is_named_with_its_budget(tmp_path):
    """The 5,000-step grid beside a longer published one: its section says at which budget it ran."""
    primary = _full_runs()
    for r in primary:
        r.params["train.steps"] = "18000"
    a = analyze(P, "default", primary)
    a.replications["grid5k"] = analyze(P, "grid5k", _full_runs())
    (name,) = [n for n, _ in a.others()]
    assert name.startswith("`grid5k` seeds 0-2") and {5000, 18000} <= set(_nums(name))
    assert list(_replication_rows(_sections(render_analysis(a, tmp_path))["Replication"])) == [
        f"seeds 0-2 (primary) vs {name}"]


# ---------------------------------------------------------------- the second evaluator


@pytest.mark.slow  # CPU-heavy (over 9 s of CPU on a Zen 3 core): `make test` runs it
def test_second_evaluator_checks_each_verdict_under_evaluator_b(tmp_path):
    """Evaluator B's figures go through A's code path (seed as the unit, Holm, four outcomes); a verdict holds
    when B gives the same outcome and better level. Here B's FID contrasts have the opposite sign to A's."""
    runs = _full_runs(with_b=True)
    a = analyze(P, "default", runs)
    s = second_evaluator(a)
    assert s.measured and s.runs_with_b == s.runs == 18
    # B's FID margin: A's ±3 scaled by the floors (2.5 / 1.25); the classifier score's is A's
    assert s.margins == {"fid": pytest.approx(6.0), "classifier_score": 0.1}
    fid = {(c.a.axis, c.a.a, c.a.b): c for c in s.checks if c.a.metric == "fid"}
    assert list(fid) == [(e.axis, e.a, e.b) for e in a.effects["fid"]]
    post_none = fid["attention.position", "post", "none"]
    # per seed B's values are A's negated: the same t, the same Holm p, the opposite estimate
    assert post_none.b.mean_diff == pytest.approx(-post_none.a.mean_diff)
    assert post_none.b.p_holm == pytest.approx(post_none.a.p_holm)
    assert post_none.a.verdict == post_none.b.verdict == "matters"
    assert (post_none.a.better(), post_none.b.better()) == ("post", "none")
    assert post_none.holds is False
    # the classifier score: the same figures under both evaluators, so every verdict holds
    scores = [c for c in s.checks if c.a.metric == "classifier_score"]
    assert len(scores) == 4 and all(c.holds for c in scores)

    data = json.loads(json.dumps(summary(a)))["second_evaluator"]
    assert data["measured"] and data["evaluator_b_sha256"] == "b0b0" * 16 and data["margins"]["fid"] == 6.0
    (js,) = [c for c in data["contrasts"] if (c["metric"], c["a"], c["b"]) == ("fid", "post", "none")]
    assert js["holds"] is False and js["evaluator_a"]["better"] == "post" and js["evaluator_b"]["better"] == "none"
    assert js["evaluator_b"]["mean_diff"] == pytest.approx(-js["evaluator_a"]["mean_diff"])
    held = [c["holds"] for c in data["contrasts"]]
    assert (sum(h is True for h in held), len(held)) == (6, 8)  # FID post − none and pre − none flip

    # the section: a row per contrast with both verdicts and whether it holds, then the count
    section = _sections(render_analysis(a, tmp_path))["Second evaluator"]
    table = _table(section)
    assert len(table.header) == 7 and len(table.rows) == len(data["contrasts"])
    for row, c in zip(table.rows, data["contrasts"]):
        assert row["comparison"] == f"{c['axis']}: {c['a']} − {c['b']}"
        for side, verdict in (("evaluator_a", "A's verdict"), ("evaluator_b", "B's verdict")):
            assert row[verdict].startswith(VERDICT_WORDS[c[side]["verdict"]])
            assert (c[side]["better"] is None) or f"**{c[side]['better']}**" in row[verdict]
        assert row["holds under both"] == {True: "**yes**", False: "**no**"}[c["holds"]]
    intro = section.split("\n|")[0]
    assert {6.0, 3.0, 2.5, 1.25} <= set(_nums(intro))  # B's FID margin, from A's and the two floors
    assert "`lenet`" in intro and f"`{data['evaluator_b_sha256'][:12]}`" in intro
    count = section.rstrip().splitlines()[-1]
    assert _nums(count)[:2] == [6, 8]


@pytest.mark.slow  # CPU-heavy (over 9 s of CPU on a Zen 3 core): `make test` runs it
def test_second_evaluator_is_not_measured_for_records_without_it(tmp_path):
    runs = _full_runs()
    text = render(P, "default", runs, tmp_path)
    section = _sections(text)["Second evaluator"]
    assert NOT_MEASURED_B in section and _tables(section) == []
    assert summary(analyze(P, "default", runs))["second_evaluator"] == {
        "measured": False, "note": NOT_MEASURED_B, "runs": 18, "runs_with_b": 0, "contrasts": []}
    # the rest of the report is the same with or without B's figures
    (tmp_path / "b").mkdir()
    both = render(P, "default", _full_runs(with_b=True), tmp_path / "b")
    assert both.split("## Second evaluator")[0] == text.split("## Second evaluator")[0]
