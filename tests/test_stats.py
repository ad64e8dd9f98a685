"""pipeline.stats against independent computations: scipy's t-tests, hand-worked Holm examples,
power by simulation, by the normal approximation and by published sample sizes."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from pipeline import stats


def test_t_interval_matches_hand_computation():
    mean, hw, n = stats.t_interval([1.0, 2.0, 3.0, 6.0])
    assert (mean, n) == (3.0, 4)
    sd = math.sqrt((4 + 1 + 0 + 9) / 3)
    assert hw == pytest.approx(3.182446305 * sd / 2)  # t(0.975, 3) from a table
    assert math.isnan(stats.t_interval([5.0])[1])
    assert math.isnan(stats.t_interval([])[0])


def test_paired_contrast_matches_ttest_rel():
    rng = np.random.default_rng(1)
    a = rng.normal(10, 2, 7)
    b = a - 1 + rng.normal(0, 0.5, 7)
    c = stats.paired_contrast(a, b)
    ref = sps.ttest_rel(a, b)
    assert c.p == pytest.approx(ref.pvalue, rel=1e-12)
    assert c.mean == pytest.approx(np.mean(a - b))
    assert c.n == 7
    assert c.sd == pytest.approx(np.std(a - b, ddof=1))
    lo, hi = ref.confidence_interval(0.95)
    assert c.ci95 == pytest.approx((lo, hi))


def test_paired_contrast_is_undefined_without_variation_or_pairs():
    assert math.isnan(stats.paired_contrast([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]).p)
    # identical nonzero differences (with float rounding) would give t = inf and p = 0 in scipy
    assert math.isnan(stats.paired_contrast([10.1, 20.1, 30.1], [0.1, 10.1, 20.1]).p)
    one = stats.paired_contrast([3.0], [1.0])
    assert (one.mean, one.n) == (2.0, 1) and math.isnan(one.p) and math.isnan(one.half_width)
    with pytest.raises(ValueError):
        stats.paired_contrast([1.0, 2.0], [1.0])


def test_interaction_is_a_one_sample_test_of_the_difference_of_differences():
    rng = np.random.default_rng(2)
    a_h, b_h, a_c, b_c = rng.normal(0, 1, (4, 5))
    c = stats.interaction_contrast(a_h, b_h, a_c, b_c)
    dod = (a_h - b_h) - (a_c - b_c)
    assert c.mean == pytest.approx(dod.mean())
    assert c.p == pytest.approx(sps.ttest_1samp(dod, 0.0).pvalue, rel=1e-12)
    # an effect that is the same under both levels: no interaction at all
    same = stats.interaction_contrast([5.0, 6.0, 7.0], [1.0, 2.0, 3.0], [9.0, 7.0, 8.0], [5.0, 3.0, 4.0])
    assert same.mean == 0 and math.isnan(same.p)


@pytest.mark.parametrize("p, adjusted", [
    ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),
    # by hand: sorted 0.01 0.02 0.03 0.5 -> x4 x3 x2 x1 = 0.04 0.06 0.06 0.5
    ([0.5, 0.01, 0.03, 0.02], [0.5, 0.04, 0.06, 0.06]),
    # the cap at 1 and the running maximum: 0.4 x 3 = 1.2 -> 1, then max(1, 0.6 x 2) = 1, max(1, 0.9) = 1
    ([0.9, 0.4, 0.6], [1.0, 1.0, 1.0]),
    ([0.02], [0.02]),
    ([], []),
])
def test_holm_hand_examples(p, adjusted):
    assert stats.holm(p) == pytest.approx(adjusted)


def test_holm_leaves_nan_out_of_the_family():
    out = stats.holm([0.01, math.nan, 0.04])
    assert math.isnan(out[1])
    assert out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.04)  # m = 2, not 3


def test_holm_against_its_definition_on_random_p_values():
    rng = np.random.default_rng(3)
    for _ in range(20):
        p = list(rng.uniform(0, 0.2, rng.integers(1, 9)))
        m = len(p)
        order = sorted(range(m), key=lambda i: p[i])
        expected = [0.0] * m
        for rank, i in enumerate(order):
            expected[i] = min(1.0, max((m - r) * p[order[r]] for r in range(rank + 1)))
        assert stats.holm(p) == pytest.approx(expected)


def test_power_formula_at_the_mde_is_the_target_power():
    for n in (2, 3, 6, 9, 30):
        mde = stats.min_detectable_difference(2.5, n)
        assert stats.paired_t_power(mde / 2.5, n) == pytest.approx(0.8, abs=1e-8)
    assert math.isnan(stats.min_detectable_difference(1.0, 1))
    assert math.isnan(stats.min_detectable_difference(0.0, 5))
    assert math.isnan(stats.min_detectable_difference(math.nan, 5))


def test_power_at_zero_effect_is_alpha():
    assert stats.paired_t_power(0.0, 6) == pytest.approx(0.05)


def test_mde_matches_simulated_power():
    rng = np.random.default_rng(4)
    n, sd = 6, 1.7
    mde = stats.min_detectable_difference(sd, n)
    diffs = rng.normal(mde, sd, (40_000, n))
    rejected = sps.ttest_1samp(diffs, 0.0, axis=1).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.8, abs=0.01)


def test_mde_approaches_the_normal_approximation_for_many_pairs():
    n, sd = 400, 3.0
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    assert stats.min_detectable_difference(sd, n) == pytest.approx(z * sd / math.sqrt(n), rel=0.005)


def test_pairs_needed_textbook_values():
    # Cohen's d_z = 0.5, two-sided alpha 0.05, power 0.8: 33.37 pairs (R pwr.t.test type="paired"),
    # so 34 (G*Power, "difference between two dependent means")
    assert stats.pairs_needed(0.5, 1.0) == 34
    assert stats.paired_t_power(0.5, 34) >= 0.8 > stats.paired_t_power(0.5, 33)
    # d_z = 0.8: 14.30 -> 15 pairs
    assert stats.pairs_needed(0.8, 1.0) == 15
    # only the ratio to sd matters, not its sign
    assert stats.pairs_needed(-1.5, 3.0) == 34


def test_pairs_needed_against_the_normal_approximation():
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    for es in (0.05, 0.1, 0.2):
        approx = (z / es) ** 2  # the t-test needs slightly more, about z_a^2 / 2 + 1
        assert approx <= stats.pairs_needed(es, 1.0) <= approx + 4


def test_pairs_and_seeds_needed_edge_cases():
    assert stats.pairs_needed(0.0, 1.0) == math.inf
    assert stats.seeds_needed(0.0, 1.0, 2) == math.inf
    assert math.isnan(stats.pairs_needed(1.0, 0.0))
    assert math.isnan(stats.pairs_needed(math.nan, 1.0))
    assert stats.pairs_needed(1e-6, 1.0) == math.inf  # beyond a billion pairs
    assert stats.pairs_needed(100.0, 1.0) == 2
    # 34 pairs with 3 pairs per seed: 12 seeds
    assert stats.seeds_needed(0.5, 1.0, 3) == 12


def test_rank_per_budget_means_and_order():
    curves = {
        "a": [{1000: 30.0, 2000: 20.0}, {1000: 32.0, 2000: 22.0}],
        "b": [{1000: 25.0, 2000: 24.0}, {1000: 27.0}],
        "c": [{2000: 10.0}],
    }
    means, ranking = stats.rank_per_budget(curves)
    assert means[1000] == {"a": 31.0, "b": 26.0}
    assert means[2000] == {"a": 21.0, "b": 24.0, "c": 10.0}
    assert ranking == {1000: ["b", "a"], 2000: ["c", "a", "b"]}
    _, higher = stats.rank_per_budget(curves, lower_is_better=False)
    assert higher[2000] == ["b", "a", "c"]


def test_kendall_tau():
    assert stats.kendall_tau(["a", "b", "c"], ["a", "b", "c"]) == pytest.approx(1.0)
    assert stats.kendall_tau(["a", "b", "c"], ["c", "b", "a"]) == pytest.approx(-1.0)
    assert stats.kendall_tau(["a", "b", "c"], ["b", "a", "c"]) == pytest.approx(1 / 3)
    assert math.isnan(stats.kendall_tau(["a"], ["a", "b"]))


def test_tost_equals_scipys_two_one_sided_t_tests():
    rng = np.random.default_rng(5)
    d = rng.normal(0.4, 1.0, 10)
    eq = stats.tost_paired(d, 1.5)
    assert eq.p_lower == pytest.approx(sps.ttest_1samp(d, -1.5, alternative="greater").pvalue, rel=1e-12)
    assert eq.p_upper == pytest.approx(sps.ttest_1samp(d, 1.5, alternative="less").pvalue, rel=1e-12)
    assert eq.p == max(eq.p_lower, eq.p_upper)


def test_tost_rejects_exactly_when_the_90_percent_interval_lies_inside_the_margin():
    # hand example: differences 1, 2, 3 -> mean 2, sd 1, se 1/sqrt(3); t(0.95, 2) = 2.919986
    d = [1.0, 2.0, 3.0]
    upper90 = 2 + 2.919986 / math.sqrt(3)  # 3.685857
    assert stats.tost_paired(d, upper90 + 1e-3).p < 0.05 < stats.tost_paired(d, upper90 - 1e-3).p
    assert stats.tost_paired(d, upper90).p == pytest.approx(0.05, abs=1e-6)
    # a difference well outside the margin is not equivalent, however many pairs
    assert stats.tost_paired(np.linspace(4, 6, 50), 3.0).p > 0.99
    for bad in ([1.0], [2.0, 2.0, 2.0]):
        assert math.isnan(stats.tost_paired(bad, 3.0).p)
    assert math.isnan(stats.tost_paired(d, 0.0).p)


def test_probability_of_improvement_by_hand_and_its_bootstrap():
    # lower is better: a wins pairs 1 and 3, ties pair 2, loses pair 4 -> (1 + 0.5 + 1 + 0) / 4
    a, b = [1.0, 2.0, 3.0, 9.0], [2.0, 2.0, 4.0, 5.0]
    poi = stats.probability_of_improvement(a, b, lower_is_better=True)
    assert poi.p == 0.625 and poi.n == 4
    assert 0.0 <= poi.lo <= poi.p <= poi.hi <= 1.0
    assert stats.probability_of_improvement(a, b, lower_is_better=False).p == 0.375
    # the same seed gives the same interval; clusters resample a seed's pairs together
    assert stats.probability_of_improvement(a, b, True) == poi
    clustered = stats.probability_of_improvement(a, b, True, clusters=[0, 0, 1, 1])
    assert clustered.p == 0.625
    # two clusters with win shares 0.75 and 0.5: every resample is one of 0.75, 0.625, 0.5
    assert (clustered.lo, clustered.hi) == (0.5, 0.75)
    always = stats.probability_of_improvement([1.0] * 6, [2.0] * 6, True)
    assert (always.p, always.lo, always.hi) == (1.0, 1.0, 1.0)
    assert math.isnan(stats.probability_of_improvement([1.0], [2.0], True).lo)


def test_probability_of_improvement_interval_covers_by_simulation():
    rng = np.random.default_rng(11)
    covered = 0
    for _ in range(200):
        d = rng.normal(0.5, 1.0, 20)  # true P(d > 0) = Phi(0.5) = 0.6915
        poi = stats.probability_of_improvement(d, np.zeros(20), lower_is_better=False, n_boot=500,
                                               seed=int(rng.integers(1 << 30)))
        covered += poi.lo <= 0.6915 <= poi.hi
    assert 0.85 <= covered / 200 <= 0.99


# ---------------------------------------------------------------- issue 29: the seed as the unit, Holm intervals,
# replication, drift


def test_seed_level_contrast_is_scipys_paired_t_on_per_seed_means():
    # hand data: 3 seeds x 2 pairs each (e.g. post − none under hinge and under bce)
    seeds = [0, 0, 1, 1, 2, 2, 3, 3]
    a = np.array([10.0, 11.0, 14.0, 12.5, 9.0, 9.5, 13.0, 12.0])
    b = np.array([12.0, 12.5, 15.0, 15.5, 9.5, 11.0, 15.0, 13.5])
    order, values = stats.seed_values(a - b, seeds)
    assert order == [0, 1, 2, 3] and values == pytest.approx([-1.75, -2.0, -1.0, -1.75])
    mean_a = [a[[s == k for s in seeds]].mean() for k in order]
    mean_b = [b[[s == k for s in seeds]].mean() for k in order]
    ref = sps.ttest_rel(mean_a, mean_b)
    c = stats.one_sample_contrast(values)
    assert c.n == 4 and c.p == pytest.approx(ref.pvalue, rel=1e-12)
    assert c.ci95 == pytest.approx(tuple(ref.confidence_interval(0.95)))
    # the pair-level test on the same numbers claims 7 df and a smaller p
    assert stats.paired_contrast(a, b).p < c.p
    with pytest.raises(ValueError):
        stats.seed_values([1.0, 2.0], [0])


def test_pairs_that_share_a_seed_make_the_pair_level_test_reject_too_often():
    """Null grids: no effect, but each seed shifts its pairs together (seed SD 1, pair SD 0.3). Over
    2,000 grids of 5 seeds x 3 pairs, the old pair-level test (df 14) rejects far more than 5%, the
    seed-level test (df 4) about 5%."""
    rng = np.random.default_rng(29)
    n_grids, n_seeds, per_seed = 2000, 5, 3
    seed_effect = rng.normal(0, 1.0, (n_grids, n_seeds, 1))
    diffs = seed_effect + rng.normal(0, 0.3, (n_grids, n_seeds, per_seed))
    pair_level = sps.ttest_1samp(diffs.reshape(n_grids, -1), 0.0, axis=1).pvalue
    seed_level = sps.ttest_1samp(diffs.mean(axis=2), 0.0, axis=1).pvalue
    assert (pair_level < 0.05).mean() > 0.15
    assert (seed_level < 0.05).mean() == pytest.approx(0.05, abs=0.015)
    # and pipeline.stats gives the seed-level one
    seeds = np.repeat(np.arange(n_seeds), per_seed)
    for g in range(20):
        _, v = stats.seed_values(diffs[g].ravel(), seeds)
        assert stats.one_sample_contrast(v).p == pytest.approx(seed_level[g], rel=1e-10)


def test_holm_intervals_exclude_zero_exactly_when_holm_rejects():
    rng = np.random.default_rng(7)
    checked = rejected = 0
    for _ in range(300):
        m = int(rng.integers(1, 7))
        contrasts = [stats.one_sample_contrast(rng.normal(rng.choice([0.0, 0.5, 1.5]), 1.0, int(rng.integers(3, 10))))
                     for _ in range(m)]
        holm = stats.holm([c.p for c in contrasts])
        for c, p_holm, iv in zip(contrasts, holm, stats.holm_intervals(contrasts)):
            assert iv.excludes_zero == (p_holm < 0.05)
            assert iv.lo <= c.mean <= iv.hi
            # never narrower than the unadjusted 95% interval, never wider than Bonferroni's
            assert iv.hi - iv.lo >= 2 * c.half_width - 1e-9
            assert iv.hi - iv.lo <= stats.t_interval_at(c, 0.05 / m).hi - stats.t_interval_at(c, 0.05 / m).lo + 1e-9
            checked += 1
            rejected += p_holm < 0.05
    assert checked > 500 and 0.2 < rejected / checked < 0.8  # both sides of the equivalence were exercised


def test_holm_intervals_by_hand():
    # p sorted: 0.001 (rank 1, level 0.05/3), 0.02 (rank 2, level 0.025: rejected), 0.04 (rank 3, level 0.05)
    cs = [stats.Contrast(1.0, 0.1, 5, 0.04, 1.0), stats.Contrast(1.0, 0.1, 5, 0.001, 1.0),
          stats.Contrast(1.0, 0.1, 5, 0.02, 1.0)]
    assert [iv.level for iv in stats.holm_intervals(cs)] == pytest.approx([0.05, 0.05 / 3, 0.025])
    # a stop at rank 2 (0.03 >= 0.025): ranks 2 and 3 both get the stopping level 0.025
    cs[2] = stats.Contrast(1.0, 0.1, 5, 0.03, 1.0)
    assert [iv.level for iv in stats.holm_intervals(cs)] == pytest.approx([0.025, 0.05 / 3, 0.025])
    nan = stats.holm_intervals([stats.Contrast(1.0, math.nan, 1, math.nan, math.nan)])[0]
    assert math.isnan(nan.lo) and not nan.excludes_zero


def test_replication_interval_and_heterogeneity():
    primary = [1.0, 2.0, 3.0, 2.0, 2.0]  # mean 2, sd sqrt(0.5)
    lo, hi = stats.replication_interval(primary, 3)
    hw = sps.t.ppf(0.975, 4) * math.sqrt(0.5) * math.sqrt(1 / 5 + 1 / 3)
    assert (lo, hi) == pytest.approx((2 - hw, 2 + hw))
    assert math.isnan(stats.replication_interval([1.0], 3)[0])
    # a second batch with the opposite effect: heterogeneity; the same effect: none
    rng = np.random.default_rng(3)
    first = rng.normal(2.0, 0.5, 7)
    assert stats.heterogeneity(first, rng.normal(-2.0, 0.5, 3)) < 0.05
    same = rng.normal(2.0, 0.5, 3)
    assert stats.heterogeneity(first, same) == pytest.approx(sps.ttest_ind(first, same, equal_var=False).pvalue)
    assert math.isnan(stats.heterogeneity(first, [1.0]))


def _curves(final_drop, noise, seeds=6, rng=None):
    """per-seed contrast curves at steps 1000..10000: a − b = 5 · exp(-step / 2000) + final_drop · step/10000."""
    rng = rng or np.random.default_rng(0)
    steps = range(1000, 10001, 1000)
    return {s: {st: 5 * math.exp(-st / 2000) + final_drop * st / 10000 + rng.normal(0, noise) for st in steps}
            for s in range(seeds)}


def test_drift_tost_tells_a_stopped_curve_from_a_moving_one():
    stopped = stats.drift_tost(_curves(0.0, 0.05), 10000, margin=3.0)
    assert stopped.steps == (5000, 6000, 7000, 8000, 9000, 10000) and stopped.settled is True
    assert stopped.status == "settled" and stopped.power > 0.99
    moving = stats.drift_tost(_curves(-4.0, 0.05), 10000, margin=3.0)  # still falling by ~1.6 over the window
    assert moving.settled is False and moving.drift.mean < -1.5
    assert moving.status == "still moving" and moving.power > 0.99  # tight drifts: the test could have said settled
    # by hand: one seed's drift is its least-squares slope x window length
    one = {0: {6000: 1.0, 8000: 2.0, 10000: 3.0}, 1: {6000: 1.0, 8000: 1.0, 10000: 1.0}}
    d = stats.drift_tost(one, 10000, margin=1.0)
    assert d.drift.mean == pytest.approx((2.0 + 0.0) / 2)
    # fewer than three checkpoints in the last half: not measured
    short = stats.drift_tost({s: {1000: 1.0, 4000: 1.0, 8000: 1.0, 10000: 1.0} for s in range(3)}, 10000, 3.0)
    assert short.settled is None and "fewer than 3" in short.reason
    # one seed: its drift is measured (a pilot's first seed shows it), the test is not
    single = stats.drift_tost({0: one[0]}, 10000, margin=1.0)
    assert single.drift.mean == pytest.approx(2.0) and single.settled is None and "two seeds" in single.reason


@pytest.mark.slow  # CPU-heavy (over 9 s of CPU on a Zen 3 core): `make test` runs it
def test_tost_power_is_the_rate_at_which_tost_calls_a_zero_drift_settled():
    rng = np.random.default_rng(7)
    for sd, n, margin in ((1.2, 10, 1.5), (2.4, 10, 1.5), (0.5, 4, 1.0)):
        hits = np.mean([stats.tost_paired(rng.normal(0, sd, n), margin).p < 0.05 for _ in range(3000)])
        assert stats.tost_power(margin, sd, n) == pytest.approx(hits, abs=0.03)
    # the figure: drift SD 2.3-2.6 over 10 seeds against ±1.5 gives a test with ~15-26% power
    assert 0.14 <= stats.tost_power(1.5, 2.6, 10) < stats.tost_power(1.5, 2.3, 10) <= 0.27
    assert math.isnan(stats.tost_power(1.5, 0.0, 10)) and math.isnan(stats.tost_power(1.5, 1.0, 1))


def test_a_noisy_drift_not_shown_settled_is_not_testable_rather_than_still_moving():
    rng = np.random.default_rng(1)
    steps = range(5000, 10001, 1000)
    noisy = {s: {st: rng.normal(0, 3.0) for st in steps} for s in range(5)}  # no drift at all, much noise
    d = stats.drift_tost(noisy, 10000, margin=1.5)
    assert d.settled is False and d.power < 0.8 and d.status == "not testable at this noise"
