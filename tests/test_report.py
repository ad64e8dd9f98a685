"""The report's statistics on hand-made runs: intervals and paired tests against hand computation."""
import math

import numpy as np
import pytest
from scipy import stats

from pipeline.report import GridRun, main_effects, t_interval

AXES = ["attention.position", "loss.type"]


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


def test_t_interval_matches_hand_computation():
    mean, hw, n = t_interval([1.0, 2.0, 3.0, 6.0])
    assert (mean, n) == (3.0, 4)
    sd = math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + 0 + (6 - 3) ** 2) / 3)
    assert hw == pytest.approx(3.182446305 * sd / 2)
    assert math.isnan(t_interval([5.0])[1])


def test_a_real_effect_is_significant_and_pairs_share_seed_and_other_axes():
    # attention lowers FID by 10; seeds shift whole pairs by 5 per seed; each run has its own jitter
    rng = np.random.default_rng(0)
    jitter = {(p, lo, s): rng.normal(0, 0.5) for p in ("none", "post", "pre") for lo in ("bce", "hinge")
              for s in (0, 1, 2)}

    def fid(pos, loss, seed):
        return 50 + (0 if pos == "none" else -10) + 5 * seed + jitter[pos, loss, seed]

    effects = main_effects(_runs(fid), AXES, "fid")
    none_post = _effect(effects, "attention.position", "none", "post")
    assert none_post.n_pairs == 6  # 2 losses x 3 seeds
    assert none_post.mean_diff == pytest.approx(10.0, abs=1.0)
    assert none_post.half_width < 2.0
    assert none_post.significant
    # the seed term (5 * seed) cancels inside pairs: an unpaired test would drown in it
    loss = _effect(effects, "loss.type", "bce", "hinge")
    xa = [fid(p, "bce", s) for p in ("none", "post", "pre") for s in (0, 1, 2)]
    xb = [fid(p, "hinge", s) for p in ("none", "post", "pre") for s in (0, 1, 2)]
    assert loss.p_value == pytest.approx(stats.ttest_rel(xa, xb).pvalue)
    assert not loss.significant


def test_identical_differences_are_not_tested():
    effects = main_effects(_runs(lambda pos, loss, seed: 7.0), AXES, "fid")
    assert all(math.isnan(e.p_value) and not e.significant for e in effects)
    assert all(e.mean_diff == 0 for e in effects)
