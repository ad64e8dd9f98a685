"""The ablation report on hand-made runs: contrasts and their orientation, Holm, interactions, ablation.json
against pipeline.stats; the rendered page read back as sections and tables, each checked against the numbers
and verdicts of ablation.json (not against its sentences); and the report written from run records. Batches,
replication and the second evaluator: test_report_batches.py; settled contrasts, the budget scan and the
ranking: test_report_budget.py."""
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats as sps

from pipeline import stats
from pipeline.config import Params, with_override
from pipeline.report import GridRun, analyze, interactions, main_effects, oriented_pairs, render, summary
from pipeline.report.contrasts import NOT_MEASURED
from pipeline.report.formatting import _duration, _signed
from pipeline.report.render_contrasts import ANSWER_METRICS, VERDICT_WORDS
from pipeline.report.render_setup import OLD_METRICS

AXES = ["attention.position", "loss.type"]
POSITIONS, LOSSES, SEEDS = ("none", "pre", "post"), ("hinge", "bce"), (0, 1, 2)
# axes none/pre/post x hinge/bce, position post and loss hinge chosen; the 3-seed design of the pilot
# the grid these tests build is `default`, with the pilot's three seeds, replicated by `default-h200`
# and the absolute margins it was judged at (FID ±3, classifier score ±0.1)
P = with_override(Params(), {"ablation.name": "default", "ablation.seeds": [0, 1, 2], "ablation.steps": 5000,
                             "ablation.replicate_with": ["default-h200"], "ablation.margin.fid": 3.0,
                             "ablation.margin.classifier_score": 0.1})
CELL = "attention.position={},loss.type={}"


def _runs(fid) -> list[GridRun]:
    """One run per position x loss x seed; fid(position, loss, seed) gives its metric."""
    out = []
    for pos in ("none", "post", "pre"):
        for loss in ("bce", "hinge"):
            for seed in (0, 1, 2):
                params = {"attention.position": pos, "loss.type": loss}
                out.append(GridRun(f"{pos}-{loss}-{seed}", f"{pos},{loss}", seed,
                                   {"fid": float(fid(pos, loss, seed))}, params, {}))
    return out


def _effect(effects, axis, a, b):
    return next(e for e in effects if (e.axis, e.a, e.b) == (axis, a, b))


# post - pre per (loss, seed): per seed 1.25, 0.65, 1.3: raw p 0.036, which Holm over the fid family lifts above 0.05
POST_MINUS_PRE = dict(zip([(lo, s) for lo in LOSSES for s in SEEDS], [1.0, 2.0, 0.4, 1.5, -0.7, 2.2]))
NOISE_NONE = dict(zip([(lo, s) for lo in LOSSES for s in SEEDS], [0.1, -0.2, 0.3, 0.0, 0.2, -0.1]))
NOISE_PRE = dict(zip([(lo, s) for lo in LOSSES for s in SEEDS], [0.2, 0.1, -0.3, 0.1, -0.2, 0.4]))


def _design_fid(pos, loss, seed):
    none = 60 + 3 * seed + NOISE_NONE[loss, seed]
    pre = none - 10 + NOISE_PRE[loss, seed]
    return {"none": none, "pre": pre, "post": pre + POST_MINUS_PRE[loss, seed]}[pos]


def _full_runs(drop=(), fid=_design_fid, with_b: bool = False) -> list[GridRun]:
    """A complete grid of realistic runs (every metric, curves, gammas, tags, times) minus `drop`. `with_b`:
    evaluator B's figures too, its FID mirroring A's within each seed (every FID contrast's sign flipped),
    its classifier score A's, its floor FID twice A's."""
    rng = np.random.default_rng(0)
    out = []
    for i, (pos, loss, seed) in enumerate((p, lo, s) for p in POSITIONS for lo in LOSSES for s in SEEDS):
        if (pos, loss, seed) in drop:
            continue
        f = fid(pos, loss, seed)
        metrics = {"fid": f, "classifier_score": 9 - f / 20 + rng.normal(0, 0.05),
                   "precision": 0.7 + rng.normal(0, 0.02), "recall": 0.5 + rng.normal(0, 0.02),
                   "density": 0.9 + rng.normal(0, 0.02), "coverage": 0.6 + rng.normal(0, 0.02),
                   "floor.fid": 1.25, "floor.classifier_score": 9.8, "floor.precision": 0.8, "floor.recall": 0.8,
                   "final.wall_s": 300.0 + i}
        curve = [(s, f + (4000 if pos == "none" else 6000) / s) for s in (1000, 2000, 3000, 4000, 5000)]
        gammas = {} if pos == "none" else {
            layer: [(s, scale * s / 5000 + 0.01 * seed) for s in range(100, 5001, 100)]
            for layer, scale in (("gamma.d14", -0.2), ("gamma.g14", 0.3), ("gamma.g28", 0.1))}
        params = {"attention.position": pos, "loss.type": loss, "train.steps": "5000", "train.batch_size": "32",
                  "evaluate.n_samples": "10000", "train.eval_n": "1000", "attention.gamma_init": "0.0"}
        tags = {"runtime.device": "cuda", "runtime.precision": "bf16", "version.torch": "2.14.1",
                "git.commit": "0123456789abcdef", "machine.cpu": "Xeon", "machine.gpu": "H100",
                "evaluator.sha256": "feedbeefcafe0000ffff", "data.source": "embedded", "data.sha256": "ab" * 32, "metrics.version": "2"}
        if with_b:
            metrics |= {"evaluator_b.fid": 120 + 6 * seed - f, "evaluator_b.classifier_score": metrics["classifier_score"],
                        "evaluator_b.precision": metrics["precision"], "evaluator_b.recall": metrics["recall"],
                        "evaluator_b.floor.fid": 2.5, "evaluator_b.floor.classifier_score": 9.6}
            tags |= {"evaluator_b.sha256": "b0b0" * 16, "evaluator_b.arch": "lenet"}
        start = 1_700_000_000_000 + 100_000 * i
        out.append(GridRun(f"run{i}", CELL.format(pos, loss), seed, metrics, params, tags, curve, gammas,
                           start, start + 300_000))
    return out


# ---------------------------------------------------------------- reading the rendered report back


def _sections(text: str) -> dict[str, str]:
    """The page's `## ` sections in page order: title (the heading up to its first " (") -> its text."""
    out: dict[str, list[str]] = {}
    body = None
    for line in text.splitlines():
        if line.startswith("## "):
            title = line[3:].split(" (")[0]
            assert title not in out, title
            body = out[title] = []
        elif body is not None:
            body.append(line)
    return {title: "\n".join(lines) for title, lines in out.items()}


@dataclass
class Table:
    header: list[str]
    rows: list[dict[str, str]]  # header -> cell

    def row(self, **cells: str) -> dict[str, str]:
        """The one row with these cells (column names with spaces: pass a dict with **)."""
        (found,) = [r for r in self.rows if all(r[k] == v for k, v in cells.items())]
        return found

    def column(self, name: str) -> list[str]:
        return [r[name] for r in self.rows]


def _tables(text: str) -> list[Table]:
    """Every markdown table in `text`: its header, and each row as header -> cell (every row as wide as the
    header, the header's names distinct, the second line the rule)."""
    tables, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip()[1:-1].split(" | ")])
        elif block:
            header, rule, *rows = block
            assert len(set(header)) == len(header) and rule == ["---"] * len(header), block[:2]
            assert all(len(r) == len(header) for r in rows), header
            tables.append(Table(header, [dict(zip(header, r)) for r in rows]))
            block = []
    return tables


def _table(text: str) -> Table:
    (table,) = _tables(text)
    return table


def _nums(text: str) -> list[float]:
    """The numbers in `text`, in order (1,000 is one number; the sign is kept)."""
    return [float(n.replace(",", "")) for n in re.findall(r"[-+]?\d+(?:,\d{3})*(?:\.\d+)?(?:e[-+]?\d+)?", text)]


def _as_shown(x: float):
    """A number as the report shows it: 3 decimals, or 3 significant digits."""
    return pytest.approx(x, abs=5e-4, rel=5e-3)


def _bullets(section: str) -> list[str]:
    return [ln[2:] for ln in section.splitlines() if ln.startswith("- ")]


def _page(runs: list[GridRun], out: Path, grid: str = "default", **analyze_args) -> SimpleNamespace:
    """A report rendered into `out`: its text, sections, the Analysis and its ablation.json (as read back)."""
    from pipeline.report import render_analysis

    a = analyze(P, grid, runs, **analyze_args)
    text = render_analysis(a, out)
    data = json.loads(json.dumps(summary(a)), parse_constant=pytest.fail)
    return SimpleNamespace(text=text, sections=_sections(text), a=a, data=data, out=out)


# ---------------------------------------------------------------- contrasts


def test_orientation_subtracts_none_and_puts_the_chosen_level_first():
    assert oriented_pairs(["none", "pre", "post"], "post") == [("post", "none"), ("pre", "none"), ("post", "pre")]
    assert oriented_pairs(["hinge", "bce"], "hinge") == [("hinge", "bce")]
    assert oriented_pairs(["hinge", "bce"], "bce") == [("bce", "hinge")]
    assert oriented_pairs(["a", "b", "c"]) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert oriented_pairs(["post", "none"], "none") == [("post", "none")]  # none is subtracted first of all


def test_a_real_effect_is_significant_and_pairs_share_seed_and_other_axes():
    # attention lowers FID by 10; seeds shift whole pairs by 5 per seed; each run has its own jitter
    rng = np.random.default_rng(0)
    jitter = {(p, lo, s): rng.normal(0, 0.5) for p in ("none", "post", "pre") for lo in ("bce", "hinge")
              for s in (0, 1, 2)}

    def fid(pos, loss, seed):
        return 50 + (0 if pos == "none" else -10) + 5 * seed + jitter[pos, loss, seed]

    effects = main_effects(_runs(fid), P.ablation.axes, "fid", {"attention.position": "post", "loss.type": "hinge"})
    post_none = _effect(effects, "attention.position", "post", "none")
    assert post_none.n_pairs == 6  # 2 losses x 3 seeds
    assert post_none.mean_diff == pytest.approx(-10.0, abs=1.0)
    assert post_none.half_width < 2.0
    assert post_none.significant and post_none.better() == "post"
    # the seed term (5 * seed) cancels inside pairs: an unpaired test would drown in it
    loss = _effect(effects, "loss.type", "hinge", "bce")
    # the seed is the unit: one value per seed (the mean of its 3 pairs), scipy's paired t over 3 seeds
    xa = [np.mean([fid(p, "hinge", s) for p in ("none", "pre", "post")]) for s in (0, 1, 2)]
    xb = [np.mean([fid(p, "bce", s) for p in ("none", "pre", "post")]) for s in (0, 1, 2)]
    assert loss.p_value == pytest.approx(sps.ttest_rel(xa, xb).pvalue)
    assert loss.n_seeds == 3 and loss.n_pairs == 9 and loss.contrast.n == 3
    assert not loss.significant
    assert [(e.a, e.b) for e in effects] == [("post", "none"), ("pre", "none"), ("post", "pre"), ("hinge", "bce")]


def test_a_plain_list_of_axes_takes_the_levels_from_the_runs():
    effects = main_effects(_runs(lambda pos, loss, seed: seed + (pos == "post")), AXES, "fid")
    assert {(e.a, e.b) for e in effects} == {("post", "none"), ("pre", "none"), ("post", "pre"), ("bce", "hinge")}


def test_identical_differences_are_not_tested():
    effects = main_effects(_runs(lambda pos, loss, seed: 7.0), AXES, "fid")
    assert all(math.isnan(e.p_value) and math.isnan(e.p_holm) and not e.significant for e in effects)
    assert all(e.mean_diff == 0 for e in effects)


def test_holm_overrides_a_raw_p_below_five_percent():
    effects = main_effects(_full_runs(), P.ablation.axes, "fid", {"attention.position": "post"})
    post_pre = _effect(effects, "attention.position", "post", "pre")
    per_seed = [np.mean([POST_MINUS_PRE[lo, s] for lo in LOSSES]) for s in SEEDS]
    assert post_pre.p_value == pytest.approx(sps.ttest_1samp(per_seed, 0).pvalue)
    assert post_pre.p_value < 0.05 < post_pre.p_holm
    assert not post_pre.significant
    assert [e.p_holm for e in effects] == pytest.approx(stats.holm([e.p_value for e in effects]))
    assert _effect(effects, "attention.position", "post", "none").significant


def test_interaction_is_the_per_seed_difference_of_differences():
    runs = _full_runs()
    found = interactions(runs, P.ablation.axes, "fid", {"attention.position": "post", "loss.type": "hinge"})
    assert [(i.a, i.b, i.c, i.d) for i in found] == [("post", "none", "hinge", "bce"), ("pre", "none", "hinge", "bce"),
                                                       ("post", "pre", "hinge", "bce")]
    post_pre = found[2]
    dod = [POST_MINUS_PRE["hinge", s] - POST_MINUS_PRE["bce", s] for s in SEEDS]
    assert post_pre.contrast.mean == pytest.approx(np.mean(dod))
    assert post_pre.contrast.p == pytest.approx(sps.ttest_1samp(dod, 0).pvalue)
    assert [i.p_holm for i in found] == pytest.approx(stats.holm([i.contrast.p for i in found]))


# ---------------------------------------------------------------- the rendered report, against ablation.json

# the page's sections, in order (the design grid: no budget scan, no replication, no evaluator B)
SECTIONS = ["Answer", "Setup", "Batches", "Where each seed ran", "Metrics per cell", "Main effects",
            "Verdict at every margin", "Interactions", "Replication", "Second evaluator", "Which variance is it?",
            "Seed plan and power", "Ranking over the training budget", "Attention usage",
            "Metrics per cell, every run", "Samples and attention of each cell's median run"]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The design grid's report, rendered once for the tests below."""
    return _page(_full_runs(), tmp_path_factory.mktemp("page"))


def _contrast(data, metric, a, b) -> dict:
    (c,) = [c for c in data["contrasts"] if (c["metric"], c["a"], c["b"]) == (metric, a, b)]
    return c


def test_the_page_has_every_section_in_order_and_no_nan(page):
    assert list(page.sections) == SECTIONS
    assert not re.search(r"\bnan\b", page.text)
    # plots, linked relative to the markdown
    for name in ("metrics.png", "ranking_over_budget.png", "gamma_over_training.png", "margins.png"):
        assert f"](ablation_files/{name})" in page.text and (page.out / name).exists()
    # samples: a subsection per cell; no record beside these runs and no earlier render: no image, an empty manifest
    samples = page.sections["Samples and attention of each cell's median run"]
    assert re.findall(r"^### (.+)$", samples, re.M) == page.a.cells
    assert "![" not in samples and json.loads((page.out / "samples.json").read_text()) == {}


def test_the_main_effects_table_shows_each_contrast_of_the_json(page):
    """One row per contrast, in ablation.json's order, with its numbers and its verdict; Holm lifts post − pre's
    raw p (0.036) above 5%, its Holm interval (97.5%: the level of the step that stopped) contains 0 and its
    90% interval lies within the FID margin of ±3: equivalent."""
    table = _table(page.sections["Main effects"])
    assert len(table.header) == 13 and len(table.rows) == len(page.data["contrasts"]) == 16
    for row, c in zip(table.rows, page.data["contrasts"]):
        assert (row["axis"], row["comparison"], row["metric"]) == (c["axis"], f"{c['a']} − {c['b']}", c["metric"])
        assert _nums(row["mean difference"]) == [_as_shown(c["mean_diff"])]
        lo, hi, level = _nums(row["Holm interval"])
        assert [lo, hi] == [_as_shown(x) for x in c["ci_holm"]]
        assert level == _as_shown(100 * (1 - c["ci_holm_alpha"]))
        assert _nums(row["seeds (pairs)"]) == [c["n_seeds"], c["n_pairs"]]
        assert _nums(row["P(a better) [95% CI]"]) == [pytest.approx(x, abs=0.005) for x in
                                                      [c["p_improvement"], *c["p_improvement_ci95"]]]
        assert _nums(row["p-value"]) == [_as_shown(c["p"])]
        assert _nums(row["Holm p-value"]) == [_as_shown(c["p_holm"])]
        assert _nums(row["margin: TOST Holm p"]) == [_as_shown(c["margin"]), _as_shown(c["p_tost_holm"])]
        assert _nums(row["gap share"]) == [pytest.approx(100 * c["share_of_gap_to_floor"], abs=0.05)]
        assert row["verdict"].startswith(f"**{VERDICT_WORDS[c['verdict']]}")
        assert (c["better"] is not None) == (c["verdict"] == "matters") and (c["better"] or "") in row["verdict"]
        assert row["settled"] == NOT_MEASURED and c["settled"]["settled"] is None
    post_pre = _contrast(page.data, "fid", "post", "pre")
    assert post_pre["p"] < 0.05 < post_pre["p_holm"] and post_pre["verdict"] == "equivalent"
    assert post_pre["mean_diff"] == pytest.approx(1.0667, abs=1e-3)
    assert post_pre["ci_holm_alpha"] == pytest.approx(0.025) and post_pre["ci_holm"][0] < 0 < post_pre["ci_holm"][1]
    assert post_pre["p_tost_holm"] == pytest.approx(0.0229, abs=1e-4)
    post_none = _contrast(page.data, "fid", "post", "none")
    assert (post_none["verdict"], post_none["better"]) == ("matters", "post")
    assert post_none["p_holm"] == pytest.approx(0.00254, abs=1e-5)
    assert post_none["ci_holm_alpha"] == pytest.approx(0.05 / 3)
    assert post_none["p_improvement"] == 1.0 and post_none["p_improvement_ci95"] == [1.0, 1.0]
    assert post_none["share_of_gap_to_floor"] == pytest.approx(0.144, abs=1e-3)  # of none's gap to the floor (1.25)
    # an inconclusive contrast names what its seeds could have detected after Holm
    score = _contrast(page.data, "classifier_score", "post", "pre")
    assert score["verdict"] == "inconclusive" and score["mde80_holm"] == pytest.approx(0.154, abs=1e-3)
    row = table.row(comparison="post − pre", metric="classifier_score")
    assert _as_shown(score["mde80_holm"]) in _nums(row["verdict"])


def test_the_margin_table_gives_each_contrasts_thresholds(page):
    table = _table(page.sections["Verdict at every margin"])
    assert len(table.header) == 9 and len(table.rows) == 16
    for row, c in zip(table.rows, page.data["contrasts"]):
        band = c["margin_band"]
        assert row["comparison"] == f"{c['a']} − {c['b']} ({c['axis']})"
        assert _nums(row["estimate"]) == [_as_shown(c["mean_diff"])]
        near = _nums(row["a difference for margins ≤"])
        assert near == ([_as_shown(band["difference_up_to"])] if band["significant"] else [])
        eq = band["equivalent_from"]  # null: never shown equivalent
        assert _nums(row["too small to matter / equivalent from"]) == ([_as_shown(eq)] if eq is not None else [])
        assert row["at the configured margin"].split(": ", 1)[1].startswith(VERDICT_WORDS[c["verdict"]])


def test_the_power_table_gives_what_each_contrast_can_detect(page):
    table = _table(page.sections["Seed plan and power"])
    assert len(table.header) == 7 and len(table.rows) == 16
    for row, c in zip(table.rows, page.data["contrasts"]):
        assert (row["metric"], row["comparison"]) == (c["metric"], f"{c['axis']}: {c['a']} − {c['b']}")
        assert _nums(row["margin"]) == [_as_shown(c["margin"])] and _nums(row["seeds"]) == [c["n_seeds"]]
        assert _nums(row["SD of seed values"]) == [_as_shown(c["sd_seeds"])]
        assert _nums(row["detectable"]) == [_as_shown(c["mde80_holm"])]
        if c["seeds_needed"] is not None and c["seeds_needed"] < 1e9:
            assert _nums(row["needed for the observed difference"]) == [round(c["seeds_needed"])]


def test_each_cell_against_the_real_data_floor(page):
    table = _table(page.sections["Metrics per cell"])
    assert len(table.header) == 10 and table.column("cell")[:-1] == page.a.cells and len(table.rows) == 7
    for row in table.rows[:-1]:
        cell, vs = page.data["cells"][row["cell"]], page.data["cells_vs_floor"][row["cell"]]
        mean, hi = cell["fid"]["mean"], cell["fid"]["ci95"][1]
        assert _nums(row["fid (lower better)"]) == [_as_shown(mean), _as_shown(hi - mean)]
        assert _nums(row["n"]) == [cell["fid"]["n"]]
        assert row["FID ÷ floor"] == f"{vs['fid_multiple_of_floor']:.1f}×"
        assert row["classifier score ÷ floor"] == f"{vs['classifier_score_share_of_floor']:.0%}"
    floor = table.rows[-1]
    assert _nums(floor["fid (lower better)"]) == [page.data["floor"]["fid"]] == [1.25]
    # the Answer gives the range of the cells' multiples of the floor
    multiples = [v["fid_multiple_of_floor"] for v in page.data["cells_vs_floor"].values()]
    assert f"{min(multiples):.1f}-{max(multiples):.1f}×" == "42.5-50.5×"
    assert f"{min(multiples):.1f}-{max(multiples):.1f}×" in page.sections["Answer"]


def test_the_setup_table_gives_the_environment_of_the_json(page):
    setup = {r["setting"]: r["value"] for r in _table(page.sections["Setup"]).rows}
    env = page.data["environment"]
    assert env["machine_cpu"] in setup["machine"] and env["machine_gpu"] in setup["machine"]
    assert setup["device"] == "cuda (bf16)"
    assert f"`{env['commit'][:12]}`" == setup["commit"]
    assert setup["evaluator checksum"].startswith(f"`{env['evaluator_sha256'][:12]}`")
    (floor,) = [v for k, v in setup.items() if k.startswith("real-data floor")]
    assert _nums(floor) == [_as_shown(v) for v in page.data["floor"].values()]
    assert setup["grid wall time"].startswith(_duration(page.data["wall_time_s"]["grid_span"]))
    assert page.data["wall_time_s"]["grid_span"] == 2000  # 17 starts 100 s apart, then 300 s
    assert setup["summed run wall time"].startswith(_duration(page.data["wall_time_s"]["sum_of_runs"]))
    assert page.data["missing"] == [] and _nums(setup["completeness"]) == []  # no run listed as missing
    assert _nums(setup["grid"]) == [3, 2, *page.data["seeds"]]  # levels per axis, then the seeds


def test_the_interactions_table_shows_each_interaction_of_the_json(page):
    table = _table(page.sections["Interactions"])
    assert len(table.header) == 8 and len(table.rows) == len(page.data["interactions"]) == 12
    for row, i in zip(table.rows, page.data["interactions"]):
        assert (row["effect"], row["changed by"], row["metric"]) == (
            f"{i['axis']}: {i['a']} − {i['b']}", f"{i['by_axis']}: {i['c']} vs {i['d']}", i["metric"])
        mean, half = _nums(row["difference of differences ± 95% CI"])
        assert mean == _as_shown(i["mean_diff_of_diffs"]) and half == _as_shown(i["ci95"][1] - i["mean_diff_of_diffs"])
        assert _nums(row["units"]) == [i["n"]] and _nums(row["Holm p-value"]) == [_as_shown(i["p_holm"])]
        assert row["verdict"].startswith(f"**{i['verdict']}**")
    # the Answer counts the FID and classifier-score interactions shown absent
    answered = [i for i in page.data["interactions"] if i["metric"] in ANSWER_METRICS]
    absent = sum(i["verdict"] == "no interaction" for i in answered)
    assert not any(i["significant"] for i in answered) and (absent, len(answered)) == (1, 6)
    assert f"{absent} of {len(answered)}" in page.sections["Answer"]


def test_the_ranking_and_gamma_tables(page):
    ranking, quick = page.data["ranking"], page.data["quick_fid"]
    table = _table(page.sections["Ranking over the training budget"])
    assert table.header == ["cell"] + [f"step {s}" for s in ranking] and table.column("cell") == page.a.cells
    for row in table.rows:
        for step in ranking:
            value, rank = _nums(row[f"step {step}"])
            assert value == _as_shown(quick[step][row["cell"]]) and rank == ranking[step].index(row["cell"]) + 1
    # gammas: a row per attention cell (none has no layer); per layer the mean final |gamma| ± its interval,
    # then each seed's signed final gamma (2 decimals), whose mean is ablation.json's
    table = _table(page.sections["Attention usage"])
    assert table.header == ["cell", "gamma.d14", "gamma.g14", "gamma.g28"]
    assert table.column("cell") == [c for c in page.a.cells if "position=none" not in c]
    for row in table.rows:
        for layer in table.header[1:]:
            final = page.data["gamma_final"][row["cell"]][layer]
            mean_abs, _, *seeds = _nums(row[layer])
            assert len(seeds) == final["n"] == 3 and np.mean(seeds) == pytest.approx(final["mean"], abs=0.005)
            assert mean_abs == pytest.approx(np.mean(np.abs(seeds)), abs=0.005)


def test_the_answer_leads_with_each_axis_verdict(page):
    """What holds at any margin first, then the configured margins, then each axis' contrasts on FID and
    classifier score with their estimates and verdicts; the primary batch named."""
    bullets = _bullets(page.sections["Answer"])
    assert 3 <= len(bullets) <= 8
    for band in (c for c in page.data["contrasts"] if c["metric"] == "fid"):
        assert f"{band['a']} − {band['b']} {_signed(band['mean_diff'])} [" in bullets[0]
    assert _as_shown(page.data["margins"]["metrics"]["fid"]["value"]) in _nums(bullets[1])
    assert _as_shown(page.data["margins"]["metrics"]["classifier_score"]["value"]) in _nums(bullets[1])
    for axis in page.data["axes"]:
        (said,) = [b for b in bullets if b.startswith(f"**{axis}**")]
        for c in (c for c in page.data["contrasts"] if c["axis"] == axis and c["metric"] in ANSWER_METRICS):
            verdict = VERDICT_WORDS[c["verdict"]] + (f": {c['better']}" if c["better"] else "")
            assert (f"{ANSWER_METRICS[c['metric']]} {_signed(c['mean_diff'])} (" in said
                    and f"**{verdict}**" in said), (c["metric"], c["a"], c["b"])
    assert page.data["primary_batch"] == [0, 1, 2] and page.a.primary.label in bullets[2]
    assert NOT_MEASURED in bullets[-1]  # no full-size checkpoint evaluations: settled is not measured


@pytest.mark.slow  # CPU-heavy (over 9 s of CPU on a Zen 3 core): `make test` runs it
def test_header_names_the_metrics_code_and_flags_machine_dependent_classifier_scores(tmp_path):
    """Runs evaluated before metrics.version existed (version 1) drew the classifier score's splits
    from float bits that differ between CPU classes, version 2 scored against the 1,000 held-out digits:
    the header says so; today's version alone needs no note."""
    from pipeline.metrics.summary import METRICS_VERSION

    def metrics_code(runs) -> str:
        text = render(P, "default", runs, tmp_path)
        return {r["setting"]: r["value"] for r in _table(_sections(text)["Setup"]).rows}["metrics code"]

    runs = _full_runs()
    for r in runs:
        r.tags["metrics.version"] = str(METRICS_VERSION)
    assert metrics_code(runs) == f"version {METRICS_VERSION}"
    for r in runs[:6]:
        del r.tags["metrics.version"]
    for r in runs[6:9]:
        r.tags["metrics.version"] = "2"
    said = metrics_code(runs)
    assert OLD_METRICS["1"] in said and OLD_METRICS["2"] in said
    assert said.startswith(f"version {METRICS_VERSION} (9 runs), 1 (6 runs), 2 (3 runs)")


def test_missing_runs_are_listed(tmp_path):
    runs = _full_runs(drop={("post", "bce", 2), ("none", "hinge", 0)})
    page = _page(runs, tmp_path)
    assert page.data["missing"] == [["attention.position=none,loss.type=hinge", 0],
                                    ["attention.position=post,loss.type=bce", 2]]
    completeness = {r["setting"]: r["value"] for r in _table(page.sections["Setup"]).rows}["completeness"]
    assert _nums(completeness)[:2] == [2, 18]  # missing of expected
    assert all(f"{cell} seed {seed}" in completeness for cell, seed in page.data["missing"])
    assert "16 of 18 runs" in page.sections["Answer"]


@pytest.mark.slow  # CPU-heavy (over 9 s of CPU on a Zen 3 core): `make test` runs it
def test_another_grid_expects_the_seeds_it_has():
    runs = [r for r in _full_runs() if r.seed < 2]
    assert analyze(P, "smoke", runs).missing == []
    assert len(analyze(P, "default", runs).missing) == 6
    assert len(analyze(P, "smoke", runs, expected_seeds=[0, 1, 2, 3]).missing) == 12


def test_single_level_axes_and_one_run_render(tmp_path):
    runs = [r for r in _full_runs() if r.cell == CELL.format("post", "hinge") and r.seed == 0]
    page = _page(runs, tmp_path, grid="smoke")
    assert page.data["contrasts"] == [] and page.data["interactions"] == []
    (row,) = _table(page.sections["Main effects"]).rows  # no contrast: a row that says so
    assert [v for k, v in row.items() if k != "comparison"] == ["–"] * 12
    assert _tables(page.sections["Interactions"]) == []


# ---------------------------------------------------------------- ablation.json against pipeline.stats


def test_ablation_json_matches_the_stats_functions():
    runs = _full_runs()
    data = json.loads(json.dumps(summary(analyze(P, "default", runs))), parse_constant=pytest.fail)
    assert set(data) >= {"grid", "generated_from", "budget", "environment", "wall_time_s", "floor", "runs", "cells",
                         "contrasts", "interactions", "ranking", "missing"}
    assert data["budget"] == {"steps": 5000, "batch_size": 32, "n_samples": 10000}
    assert data["environment"] == {"machine_cpu": "Xeon", "machine_gpu": "H100", "device": "cuda", "torch": "2.14.1",
                                   "commit": "0123456789abcdef", "evaluator_sha256": "feedbeefcafe0000ffff",
                                   "data_source": "embedded", "data_sha256": "ab" * 32, "metrics_version": "2"}
    assert data["wall_time_s"] == {"grid_span": 2000.0, "sum_of_runs": sum(300.0 + i for i in range(18))}
    assert data["floor"]["fid"] == 1.25 and data["generated_from"] == {"experiment": "sagan-mnist"}
    assert len(data["runs"]) == 18 and data["missing"] == []
    cell = data["cells"][CELL.format("post", "hinge")]["fid"]
    mean, hw, n = stats.t_interval([r.metrics["fid"] for r in runs if r.cell == CELL.format("post", "hinge")])
    assert cell == {"mean": pytest.approx(mean), "ci95": pytest.approx([mean - hw, mean + hw]), "n": n}

    fid = {(r.params["attention.position"], r.params["loss.type"], r.seed): r.metrics["fid"] for r in runs}
    # the seed as the unit: scipy's paired t over per-seed means
    def seed_means(a, b, axis):
        if axis == "position":
            return ([np.mean([fid[a, lo, s] for lo in LOSSES]) for s in SEEDS],
                    [np.mean([fid[b, lo, s] for lo in LOSSES]) for s in SEEDS])
        return ([np.mean([fid[p, a, s] for p in POSITIONS]) for s in SEEDS],
                [np.mean([fid[p, b, s] for p in POSITIONS]) for s in SEEDS])
    family = [stats.paired_contrast(*seed_means("post", "none", "position")),
              stats.paired_contrast(*seed_means("pre", "none", "position")),
              stats.paired_contrast(*seed_means("post", "pre", "position")),
              stats.paired_contrast(*seed_means("hinge", "bce", "loss"))]
    for c, (xa, xb) in zip(family, [seed_means("post", "none", "position"), seed_means("pre", "none", "position"),
                                    seed_means("post", "pre", "position"), seed_means("hinge", "bce", "loss")]):
        assert c.p == pytest.approx(sps.ttest_rel(xa, xb).pvalue)
    holm = stats.holm([c.p for c in family])
    rows = [c for c in data["contrasts"] if c["metric"] == "fid"]
    assert [(c["axis"], c["a"], c["b"]) for c in rows] == [
        ("attention.position", "post", "none"), ("attention.position", "pre", "none"),
        ("attention.position", "post", "pre"), ("loss.type", "hinge", "bce")]
    for row, c, p_holm, per_seed in zip(rows, family, holm, (2, 2, 2, 3)):
        assert row["mean_diff"] == pytest.approx(c.mean)
        assert row["ci95"] == pytest.approx(list(c.ci95))
        assert row["n_seeds"] == c.n == 3 and row["n_pairs"] == 3 * per_seed
        assert row["p"] == pytest.approx(c.p) and row["p_holm"] == pytest.approx(p_holm)
        assert row["significant"] == (p_holm < 0.05)
        # the Holm interval and the verdict never disagree
        assert (row["ci_holm"][0] > 0 or row["ci_holm"][1] < 0) == row["significant"]
        assert row["mde80"] == pytest.approx(stats.min_detectable_difference(c.sd, c.n))
        assert row["seeds_needed"] == stats.pairs_needed(c.mean, c.sd)
    assert {c["metric"] for c in data["contrasts"]} == {"fid", "classifier_score", "precision", "recall"}
    inter = data["interactions"][2]
    assert (inter["metric"], inter["a"], inter["b"], inter["c"], inter["d"]) == ("fid", "post", "pre", "hinge", "bce")
    assert inter["mean_diff_of_diffs"] == pytest.approx(
        np.mean([POST_MINUS_PRE["hinge", s] - POST_MINUS_PRE["bce", s] for s in SEEDS]))
    assert list(data["ranking"]) == ["1000", "2000", "3000", "4000", "5000"]


def test_json_nulls_for_nan_and_inf():
    # identical runs: no interval, no test, no power numbers
    runs = _full_runs(fid=lambda pos, loss, seed: 30.0)
    data = json.loads(json.dumps(summary(analyze(P, "default", runs))), parse_constant=pytest.fail)
    row = data["contrasts"][0]
    assert row["mean_diff"] == 0 and row["p"] is None and row["p_holm"] is None and row["mde80"] is None
    assert row["seeds_needed"] is None and row["significant"] is False


# ---------------------------------------------------------------- a real MLflow store, run records


def _log_runs(client, exp_id, grid, runs, artifact_dir: Path):
    from mlflow.entities import Metric, Param, RunTag

    for r in runs:
        tags = {**r.tags, "grid.name": grid, "grid.cell": r.cell, "grid.seed": str(r.seed)}
        run = client.create_run(exp_id, start_time=r.start_ms, tags=tags)
        rid = run.info.run_id
        metrics = [Metric(k, v, 0, 0) for k, v in r.metrics.items()]
        metrics += [Metric("fid_quick", v, 0, s) for s, v in r.fid_curve]
        metrics += [Metric(k, v, 0, s) for k, curve in r.gamma_curves.items() for s, v in curve]
        client.log_batch(rid, metrics=metrics, params=[Param(k, v) for k, v in r.params.items()],
                         tags=[RunTag(k, v) for k, v in tags.items()])
        client.log_artifact(rid, str(artifact_dir / "grid.png"), "samples")  # no attention.png: skipped
        client.set_terminated(rid, "FINISHED", end_time=r.end_ms)


def _record_runs(grid: str, runs: list[GridRun], results: Path, samples: Path) -> None:
    """`runs` as the run records of `grid` in results/<grid>/, with samples/grid.png beside each (no
    attention.png: skipped), as a grid run's evaluate stage leaves them."""
    from pipeline.records import write_record
    from pipeline.records.export import save_images

    for r in runs:
        curves = {"fid_quick": r.fid_curve, **r.gamma_curves}
        tags = {**r.tags, "grid.name": grid, "grid.cell": r.cell, "grid.seed": str(r.seed)}
        save_images(write_record({"schema": 1, "grid": grid, "cell": r.cell, "seed": r.seed, "run_id": r.run_id,
                                  "params": r.params, "metrics": r.metrics, "tags": tags, "curves": curves,
                                  "start_ms": r.start_ms, "end_ms": r.end_ms}, results / grid), samples)


def test_write_report_from_run_records(tmp_path, monkeypatch, caplog):
    from pipeline.report import write_report

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'no-store/mlflow.db'}")  # never read
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples/grid.png").write_bytes(b"\x89PNG not really")
    positions = {"none", "post"}
    runs = [r for r in _full_runs() if r.params["attention.position"] in positions and r.seed < 2]
    results = tmp_path / "results"
    _record_runs("default", runs, results, tmp_path / "samples")
    _record_runs("smoke", runs[:1], results, tmp_path / "samples")
    reports = tmp_path / "reports"

    md = write_report(P, out_dir=reports, results=results)
    assert md == reports / "ablation.md"
    text = md.read_text()
    data = json.loads((reports / "ablation.json").read_text(), parse_constant=pytest.fail)
    assert len(data["runs"]) == 8
    assert ["attention.position=pre,loss.type=hinge", 0] in data["missing"]  # params expect pre and seed 2
    completeness = {r["setting"]: r["value"] for r in _table(_sections(text)["Setup"]).rows}["completeness"]
    assert all(f"{cell} seed {seed}" in completeness for cell, seed in data["missing"])
    assert data["wall_time_s"]["sum_of_runs"] == pytest.approx(sum(r.metrics["final.wall_s"] for r in runs))
    assert data["ranking"]["5000"] and data["environment"]["machine_gpu"] == "H100"
    assert "gamma.g14" in data["gamma_final"][CELL.format("post", "hinge")]
    # images: copied from beside the records into ablation_files/ and linked relative to the markdown
    links = [ln.split("](")[1].rstrip(")") for ln in text.splitlines() if ln.startswith("![")]
    assert any(link.endswith("-grid.png") for link in links)
    assert all((md.parent / link).exists() for link in links)

    # another grid never overwrites the published report
    smoke = write_report(P, "smoke", out_dir=reports, results=results)
    assert smoke == reports / "smoke" / "ablation.md" and (reports / "smoke" / "ablation.json").exists()
    assert md.read_text() == text
    assert all((smoke.parent / ln.split("](")[1].rstrip(")")).exists()
               for ln in smoke.read_text().splitlines() if ln.startswith("!["))

    # a grid with no runs: an existing report is kept, with a warning saying how to regenerate it
    kept = reports / "gone" / "ablation.md"
    kept.parent.mkdir()
    kept.write_text("the published report\n")
    with caplog.at_level(logging.WARNING, logger="report"):
        caplog.clear()
        assert write_report(P, "gone", out_dir=reports, results=results) == kept
    assert kept.read_text() == "the published report\n"
    (warning,) = [r for r in caplog.records if r.name == "report" and r.levelno == logging.WARNING]
    assert str(kept) in warning.getMessage() and "python -m pipeline.records export --grid gone" in warning.getMessage()
    # a grid that never ran: a page with its title and no section, and an empty ablation.json
    never = write_report(P, "never", out_dir=reports, results=results)
    assert never.read_text().startswith("# Ablation report: grid `never`") and _sections(never.read_text()) == {}
    assert json.loads((never.parent / "ablation.json").read_text())["runs"] == []
    assert not (tmp_path / "no-store").exists()


# ---------------------------------------------------------------- the four outcomes


def test_four_outcomes_in_the_json_match_the_stats_functions():
    runs = _full_runs()
    data = json.loads(json.dumps(summary(analyze(P, "default", runs))), parse_constant=pytest.fail)
    fid = {(r.params["attention.position"], r.params["loss.type"], r.seed): r.metrics["fid"] for r in runs}
    diffs = [np.array([np.mean([fid[a, lo, s] - fid[b, lo, s] for lo in LOSSES]) for s in SEEDS])
             for a, b in (("post", "none"), ("pre", "none"), ("post", "pre"))]
    diffs.append(np.array([np.mean([fid[p, "hinge", s] - fid[p, "bce", s] for p in POSITIONS]) for s in SEEDS]))
    tost = [stats.tost_paired(d, 3.0).p for d in diffs]
    holm_tost = stats.holm(tost)
    rows = [c for c in data["contrasts"] if c["metric"] == "fid"]
    for row, d, p, p_holm in zip(rows, diffs, tost, holm_tost):
        assert row["margin"] == 3.0 and row["p_tost"] == pytest.approx(p) and row["p_tost_holm"] == pytest.approx(p_holm)
        ref = max(sps.ttest_1samp(d, -3.0, alternative="greater").pvalue, sps.ttest_1samp(d, 3.0, alternative="less").pvalue)
        assert row["p_tost"] == pytest.approx(ref, rel=1e-9)
        sig, eq = row["p_holm"] < 0.05, p_holm < 0.05
        expected = (("too small to matter" if eq else "matters" if abs(d.mean()) >= 3.0 else "unclear size") if sig
                    else "equivalent" if eq else "inconclusive")
        assert row["verdict"] == expected
        better = (d < 0).mean() + 0.5 * (d == 0).mean()  # per seed; lower FID is better
        assert row["p_improvement"] == pytest.approx(better)
        lo, hi = row["p_improvement_ci95"]
        assert 0 <= lo <= row["p_improvement"] <= hi <= 1
    assert [r["verdict"] for r in rows] == ["matters", "matters", "equivalent", "equivalent"]
    assert rows[0]["better"] == "post" and rows[2]["better"] is None
    inconclusive = next(c for c in data["contrasts"] if c["verdict"] == "inconclusive")
    assert inconclusive["mde80_holm"] > abs(inconclusive["mean_diff"])
    assert all(i["verdict"] in ("interacts", "no interaction", "inconclusive") for i in data["interactions"])


def test_an_effect_inside_the_margin_is_never_a_difference_that_matters():
    """Classifier score post − pre +0.06 with margin 0.1, significant: not `matters` (issue 29)."""
    rng = np.random.default_rng(1)
    shift = {s: rng.normal(0, 0.003) for s in range(8)}
    runs = []
    for pos in POSITIONS:
        for loss in LOSSES:
            for seed in range(8):
                cs = 8 + 0.3 * seed + (0.06 + shift[seed] if pos == "post" else 0.0) + rng.normal(0, 0.005)
                runs.append(GridRun(f"{pos}-{loss}-{seed}", CELL.format(pos, loss), seed, {"classifier_score": cs},
                                    {"attention.position": pos, "loss.type": loss}, {}))
    e = _effect(main_effects(runs, P.ablation.axes, "classifier_score", {"attention.position": "post"}, 0.1),
                "attention.position", "post", "pre")
    assert e.significant and abs(e.mean_diff) < 0.1 and e.verdict == "too small to matter"
    wide = _effect(main_effects(runs, P.ablation.axes, "classifier_score", {"attention.position": "post"}, 0.0601),
                   "attention.position", "post", "pre")  # a margin just above the estimate: TOST cannot show it
    assert wide.significant and wide.verdict in ("unclear size", "matters")
    assert wide.verdict == ("matters" if abs(wide.mean_diff) >= 0.0601 else "unclear size")
