"""The ablation report on hand-made runs: contrasts and their orientation, Holm, interactions, power,
ranking, missing runs, ablation.json against pipeline.stats; and one tiny real MLflow store."""
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from pipeline import stats
from pipeline.config import Params, with_override
from pipeline.report import (GridRun, analyze, interactions, main_effects, oriented_pairs, ranking_sentence, render,
                             render_analysis, summary, t_interval)

AXES = ["attention.position", "loss.type"]
POSITIONS, LOSSES, SEEDS = ("none", "pre", "post"), ("hinge", "bce"), (0, 1, 2)
# axes none/pre/post x hinge/bce, position post and loss hinge chosen; the 3-seed design of the pilot
P = with_override(Params(), {"ablation.seeds": [0, 1, 2]})
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


def _full_runs(drop=(), fid=_design_fid) -> list[GridRun]:
    """A complete grid of realistic runs (every metric, curves, gammas, tags, times) minus `drop`."""
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
        start = 1_700_000_000_000 + 100_000 * i
        out.append(GridRun(f"run{i}", CELL.format(pos, loss), seed, metrics, params, tags, curve, gammas,
                           start, start + 300_000))
    return out


# ---------------------------------------------------------------- contrasts


def test_orientation_subtracts_none_and_puts_the_chosen_level_first():
    assert oriented_pairs(["none", "pre", "post"], "post") == [("post", "none"), ("pre", "none"), ("post", "pre")]
    assert oriented_pairs(["hinge", "bce"], "hinge") == [("hinge", "bce")]
    assert oriented_pairs(["hinge", "bce"], "bce") == [("bce", "hinge")]
    assert oriented_pairs(["a", "b", "c"]) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert oriented_pairs(["post", "none"], "none") == [("post", "none")]  # none is subtracted first of all


def test_t_interval_is_still_importable_from_the_report():
    assert t_interval([1.0, 2.0, 3.0]) == stats.t_interval([1.0, 2.0, 3.0])


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


def test_ranking_sentence():
    final = ["a", "b", "c"]
    assert "holds at every earlier budget" in ranking_sentence({1: final, 2: final})
    text = ranking_sentence({1: ["b", "a", "c"], 2: ["a", "b", "c"], 3: final})
    assert "holds from step 2 on" in text and "differs at step(s) 1" in text
    assert "best at step(s) 2 of the earlier ones" in text
    assert "Only one budget" in ranking_sentence({5: final})


# ---------------------------------------------------------------- the rendered report


def test_render_without_a_store_has_every_section(tmp_path):
    text = render(P, "default", _full_runs(), tmp_path)
    for heading in ("## Answer", "## Setup", "## Batches", "## Where each seed ran", "## Metrics per cell",
                    "## Main effects", "## Interactions", "## Replication", "## Seed plan and power",
                    "## Ranking over the training budget", "## Attention usage"):
        assert heading in text, heading
    # Holm: the family is named; post - pre (raw p 0.036) is not called different, and its Holm interval
    # (97.5%, the level of the step that stopped) contains 0; its 90% interval lies within the FID margin
    # of ±3: equivalent; every contrast gets one of the four outcomes
    assert "family of all contrasts of one metric" in text
    def row(start):
        return next(ln for ln in text.splitlines() if ln.startswith(start))
    post_pre = row("| attention.position | post − pre | fid |")
    assert "| +1.067 | [-0.229, 2.363] (97.50%) | 3 (6) |" in post_pre
    assert "**equivalent** within ±3.000 (TOST, Holm p 0.0229)" in post_pre
    post_none = row("| attention.position | post − none | fid |")
    assert "**a difference that matters: post** (Holm p 0.00254" in post_none and "(98.33%)" in post_none
    assert "| 1.00 [1.00, 1.00] |" in post_none  # P(post better), over seeds
    assert "| +14.4% |" in post_none  # of none's gap to the floor (FID 1.25)
    assert "not measured (no full-size checkpoint evaluations in these records)" in post_none
    assert "**inconclusive**: neither a difference nor within ±0.100; these seeds detect ±0.154 at 80% power " \
           "after Holm" in row("| attention.position | post − pre | classifier_score |")
    effects = text.split("## Main effects")[1].split("## Interactions")[0]
    assert "not significant" not in effects
    verdicts = [ln.split(" | ")[-2] for ln in effects.splitlines() if ln.startswith(("| attention", "| loss"))]
    assert len(verdicts) == 16 and all(re.search(
        r"\*\*(a difference that matters: \w+|a difference too small to matter|a difference of unclear size|"
        r"equivalent|inconclusive)\*\*", v) for v in verdicts)
    assert all(ln.count(" | ") == 12 for ln in effects.splitlines() if ln.startswith(("| attention", "| loss")))
    # the seed plan: what each contrast detects after Holm, and the seeds the observed difference needs
    power_row = row("| fid | attention.position: post − pre |")
    assert "±3.000 | 3 |" in power_row and "seeds |" in power_row
    # absolute quality: every cell as a multiple of the floor, in the answer and the cell table
    assert "42.5-50.5× the real-data floor's 1.250" in text.split("## Setup")[0]
    assert re.search(r"\| \d+\.\d× \| \d+% \|$", row("| attention.position=post,loss.type=hinge |"))
    # no verdict rests on the quick-FID ranking, and no "provisional" label
    assert "Provisional" not in text and "Kendall" not in text
    # the interaction of each position contrast with the loss
    assert "| attention.position: post − pre | loss.type: hinge vs bce | fid |" in text
    # header: machine, device, evaluator checksum (12 characters), floor, wall times, completeness
    assert "cpu: Xeon; gpu: H100" in text and "cuda (bf16)" in text and "`feedbeefcafe`" in text
    assert "`0123456789ab`" in text and "fid 1.250" in text
    assert "| grid wall time | 33 min 20 s" in text  # 17 starts 100 s apart, then 300 s
    assert "complete: every cell has every expected seed" in text
    # the ranking: quick FID per budget, and a sentence about the final ranking at earlier budgets
    assert "| step 1000 | step 2000 |" in text and "(#1)" in text and "final-budget ranking" in text
    # gamma table: a row per attention cell, one column per layer
    assert "| cell | gamma.d14 | gamma.g14 | gamma.g28 |" in text
    assert not any(ln.startswith("| attention.position=none") for ln in
                   text.split("## Attention usage")[1].splitlines())
    # plots, linked relative to the markdown
    for name in ("metrics.png", "ranking_over_budget.png", "gamma_over_training.png"):
        assert f"](ablation_files/{name})" in text and (tmp_path / name).exists()
    assert "No images: no run of this cell has its samples in the MLflow store or an earlier render" in text
    answer = text.split("## Answer")[1].split("## Setup")[0]
    assert 3 <= sum(ln.startswith("- ") for ln in answer.splitlines()) <= 6
    assert ("**attention.position**: post − none: FID -8.883 (Holm interval [-10.862, -6.904] (98.33%), +14% of "
            "none's gap to the floor, **a difference that matters: post**)") in answer
    assert re.search(r"post − pre: FID \+1\.067 \(Holm interval \[-?\d\.\d{3}, \d\.\d{3}\] \(97\.50%\), -2% of pre's "
                     r"gap to the floor, \*\*equivalent\*\*\), classifier score", answer)
    assert "primary batch, seeds 0-2 (3 seeds" in answer
    assert "nan" not in text


def test_header_names_the_metrics_code_and_flags_machine_dependent_classifier_scores(tmp_path):
    """Runs evaluated before metrics.version existed (version 1) drew the classifier score's splits
    from float bits that differ between CPU classes: the header says so; version 2 alone needs no note."""
    runs = _full_runs()
    assert "| metrics code | version 2 |" in render(P, "default", runs, tmp_path)
    for r in runs[:6]:
        del r.tags["metrics.version"]
    text = render(P, "default", runs, tmp_path)
    row = next(ln for ln in text.splitlines() if ln.startswith("| metrics code |"))
    assert "2 (12 runs), 1 (6 runs)" in row and "machine-dependent" in row and "FID is unaffected" in row


def test_missing_runs_are_listed(tmp_path):
    runs = _full_runs(drop={("post", "bce", 2), ("none", "hinge", 0)})
    text = render(P, "default", runs, tmp_path)
    assert "incomplete: 2 of 18 runs missing" in text
    assert "attention.position=none,loss.type=hinge seed 0; attention.position=post,loss.type=bce seed 2" in text
    assert "the grid is incomplete" in text.split("## Setup")[0]
    assert summary(analyze(P, "default", runs))["missing"] == [
        ["attention.position=none,loss.type=hinge", 0], ["attention.position=post,loss.type=bce", 2]]


def test_another_grid_expects_the_seeds_it_has():
    runs = [r for r in _full_runs() if r.seed < 2]
    assert analyze(P, "smoke", runs).missing == []
    assert len(analyze(P, "default", runs).missing) == 6
    assert len(analyze(P, "smoke", runs, expected_seeds=[0, 1, 2, 3]).missing) == 12


def test_single_level_axes_and_one_run_render(tmp_path):
    runs = [r for r in _full_runs() if r.cell == CELL.format("post", "hinge") and r.seed == 0]
    text = render(P, "smoke", runs, tmp_path)
    assert "no axis has two levels with paired runs" in text and "no interaction" in text


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
    units = [(lo, s) for lo in LOSSES for s in SEEDS]
    family = [stats.paired_contrast([fid["post", lo, s] for lo, s in units], [fid["none", lo, s] for lo, s in units]),
              stats.paired_contrast([fid["pre", lo, s] for lo, s in units], [fid["none", lo, s] for lo, s in units]),
              stats.paired_contrast([fid["post", lo, s] for lo, s in units], [fid["pre", lo, s] for lo, s in units]),
              stats.paired_contrast([fid[p, "hinge", s] for p in POSITIONS for s in SEEDS],
                                    [fid[p, "bce", s] for p in POSITIONS for s in SEEDS])]
    holm = stats.holm([c.p for c in family])
    rows = [c for c in data["contrasts"] if c["metric"] == "fid"]
    assert [(c["axis"], c["a"], c["b"]) for c in rows] == [
        ("attention.position", "post", "none"), ("attention.position", "pre", "none"),
        ("attention.position", "post", "pre"), ("loss.type", "hinge", "bce")]
    for row, c, p_holm, per_seed in zip(rows, family, holm, (2, 2, 2, 3)):
        assert row["mean_diff"] == pytest.approx(c.mean)
        assert row["ci95"] == pytest.approx(list(c.ci95))
        assert row["n_pairs"] == c.n and row["p"] == pytest.approx(c.p) and row["p_holm"] == pytest.approx(p_holm)
        assert row["significant"] == (p_holm < 0.05)
        assert row["mde80"] == pytest.approx(stats.min_detectable_difference(c.sd, c.n))
        assert row["seeds_needed"] == stats.seeds_needed(c.mean, c.sd, per_seed)
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


# ---------------------------------------------------------------- a real MLflow store


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


def test_write_report_from_a_real_store(tmp_path, monkeypatch, caplog):
    import mlflow

    from pipeline import tracking
    from pipeline.report import write_report

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # the lock file and artifact root live in tmp_path
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp_id = tracking.setup(P.mlflow.experiment)
    client = mlflow.MlflowClient(tracking.tracking_uri())
    (tmp_path / "grid.png").write_bytes(b"\x89PNG not really")
    positions = {"none", "post"}
    runs = [r for r in _full_runs() if r.params["attention.position"] in positions and r.seed < 2]
    _log_runs(client, exp_id, "default", runs, tmp_path)
    _log_runs(client, exp_id, "smoke", runs[:1], tmp_path)
    reports = tmp_path / "reports"

    md = write_report(P, out_dir=reports)
    assert md == reports / "ablation.md"
    text = md.read_text()
    data = json.loads((reports / "ablation.json").read_text(), parse_constant=pytest.fail)
    assert len(data["runs"]) == 8
    assert ["attention.position=pre,loss.type=hinge", 0] in data["missing"]  # params expect pre and seed 2
    assert "attention.position=post,loss.type=bce seed 2" in text
    assert data["wall_time_s"]["sum_of_runs"] == pytest.approx(sum(r.metrics["final.wall_s"] for r in runs))
    assert data["ranking"]["5000"] and data["environment"]["machine_gpu"] == "H100"
    assert "gamma.g14" in data["gamma_final"][CELL.format("post", "hinge")]
    # images: downloaded into ablation_files/ and linked relative to the markdown
    links = [ln.split("](")[1].rstrip(")") for ln in text.splitlines() if ln.startswith("![")]
    assert any(link.endswith("-grid.png") for link in links)
    assert all((md.parent / link).exists() for link in links)
    assert not (reports / "ablation_files" / "samples").exists()

    # another grid never overwrites the published report
    smoke = write_report(P, "smoke", out_dir=reports)
    assert smoke == reports / "smoke" / "ablation.md" and (reports / "smoke" / "ablation.json").exists()
    assert md.read_text() == text
    assert all((smoke.parent / ln.split("](")[1].rstrip(")")).exists()
               for ln in smoke.read_text().splitlines() if ln.startswith("!["))

    # a grid with no runs: an existing report is kept, with a warning saying how to regenerate it
    kept = reports / "gone" / "ablation.md"
    kept.parent.mkdir()
    kept.write_text("the published report\n")
    with caplog.at_level(logging.WARNING, logger="report"):
        assert write_report(P, "gone", out_dir=reports) == kept
    assert kept.read_text() == "the published report\n"
    assert "kept the existing" in caplog.text and "MLFLOW_TRACKING_URI" in caplog.text
    assert "No finished runs" in write_report(P, "never", out_dir=reports).read_text()


# ---------------------------------------------------------------- three verdicts, settled budgets, replication


def test_three_way_verdicts_in_the_json_match_the_stats_functions():
    runs = _full_runs()
    data = json.loads(json.dumps(summary(analyze(P, "default", runs))), parse_constant=pytest.fail)
    fid = {(r.params["attention.position"], r.params["loss.type"], r.seed): r.metrics["fid"] for r in runs}
    units = [(lo, s) for lo in LOSSES for s in SEEDS]
    diffs = [np.array([fid[a, lo, s] - fid[b, lo, s] for lo, s in units])
             for a, b in (("post", "none"), ("pre", "none"), ("post", "pre"))]
    diffs.append(np.array([fid[p, "hinge", s] - fid[p, "bce", s] for p in POSITIONS for s in SEEDS]))
    tost = [stats.tost_paired(d, 3.0).p for d in diffs]
    holm_tost = stats.holm(tost)
    rows = [c for c in data["contrasts"] if c["metric"] == "fid"]
    for row, d, p, p_holm in zip(rows, diffs, tost, holm_tost):
        assert row["margin"] == 3.0 and row["p_tost"] == pytest.approx(p) and row["p_tost_holm"] == pytest.approx(p_holm)
        # scipy's one-sided tests, independently
        ref = max(sps.ttest_1samp(d, -3.0, alternative="greater").pvalue, sps.ttest_1samp(d, 3.0, alternative="less").pvalue)
        assert row["p_tost"] == pytest.approx(ref, rel=1e-9)
        expected = ("better" if row["p_holm"] < 0.05 else "equivalent" if p_holm < 0.05 else "inconclusive")
        assert row["verdict"] == expected
        better = (d < 0).mean() + 0.5 * (d == 0).mean()  # lower FID is better: a wins where a − b < 0
        assert row["p_improvement"] == pytest.approx(better)
        lo, hi = row["p_improvement_ci95"]
        assert 0 <= lo <= row["p_improvement"] <= hi <= 1
    assert [r["verdict"] for r in rows] == ["better", "better", "equivalent", "equivalent"]
    assert rows[0]["better"] == "post" and rows[2]["better"] is None
    inconclusive = next(c for c in data["contrasts"] if c["verdict"] == "inconclusive")
    assert inconclusive["mde80_holm"] > abs(inconclusive["mean_diff"])
    assert all(i["verdict"] in ("interacts", "no interaction", "inconclusive") for i in data["interactions"])


def test_a_ranking_still_moving_makes_the_verdicts_provisional(tmp_path):
    runs = _full_runs()
    settled = summary(analyze(P, "default", runs))["settled"]
    assert settled["settled"] and settled["tau_last_two"] == pytest.approx(1.0) and settled["first_checked"] == 3000
    # the last budget reorders the cells: quick FIDs at step 5000 reversed
    for r in runs:
        r.fid_curve = [(s, v if s < 5000 else 1000 - v) for s, v in r.fid_curve]
    text = render(P, "default", runs, tmp_path)
    data = summary(analyze(P, "default", runs))["settled"]
    assert data["known"] and not data["settled"] and data["tau_last_two"] < 0.9
    assert "**Provisional**" in text.split("## Setup")[0] and "**The ranking had not settled**" in text
    assert "(provisional: the ranking was still moving)" in text
    # without curves (converted records) nobody can tell: no label either way
    for r in runs:
        r.fid_curve = []
    assert not summary(analyze(P, "default", runs))["settled"]["known"]


def test_replication_against_a_second_grid_and_between_seed_halves(tmp_path):
    from dataclasses import replace

    six = [replace(r, seed=r.seed + 3 * k, run_id=f"{r.run_id}-{k}") for k in (0, 1) for r in _full_runs()]
    a = analyze(P, "default", six)
    # the second grid: the same design but post 5 better, which reverses post − pre (pre was better by 1.1)
    other = _full_runs(fid=lambda pos, loss, seed: _design_fid(pos, loss, seed) - (5 if pos == "post" else 0))
    a.replications["default-h200"] = analyze(P, "default-h200", other)
    text = render_analysis(a, tmp_path)
    section = text.split("## Replication")[1].split("## Seed plan")[0]
    assert "### `default` vs `default-h200`" in section and "### Seeds 0-2 vs seeds 3-5" in section
    pre_none = next(ln for ln in section.splitlines() if ln.startswith("| fid | attention.position: pre − none |"))
    assert pre_none.endswith("| yes | yes | **yes** |")  # the same design gives the same verdict
    post_pre = next(ln for ln in section.splitlines() if ln.startswith("| fid | attention.position: post − pre |"))
    assert "better: pre |" in post_pre and "better: post |" in post_pre and post_pre.endswith("| no | no | no |")
    # the halves are the same runs twice: every contrast replicates
    halves = section.split("### Seeds 0-2 vs seeds 3-5")[1]
    assert "8 of 8 contrasts replicate." in halves
    data = summary(a)["replication"]
    assert data[0]["second"] == "default-h200" and data[1]["first_seeds"] == [0, 1, 2]
    assert all(c["replicates"] for c in data[1]["contrasts"])
    assert not next(c for c in data[0]["contrasts"] if (c["metric"], c["a"], c["b"]) == ("fid", "post", "pre"))["replicates"]


def test_seeds_table_names_the_machine_each_seed_ran_on(tmp_path):
    runs = _full_runs()
    for r in runs:
        if r.seed == 2:
            r.tags.update({"runtime.device": "cpu", "machine.cpu_uarch": "AMD Zen 5 (family 26 model 2)",
                           "machine.cpu_class": "avx512"})
    r = next(r for r in runs if r.seed == 1)
    r.tags["runtime.precision"] = "fp32"
    text = render(P, "default", runs, tmp_path)
    seeds = text.split("## Where each seed ran")[1].split("## Metrics per cell")[0]
    assert "| 0 | 6 | H100; cuda, bf16 | version 2 | `feedbeefcafe` |" in seeds
    assert "| 2 | 6 | AMD Zen 5 (family 26 model 2), avx512; cpu, bf16 |" in seeds
    assert "**Seed(s) 1 ran on more than one machine**" in seeds
