"""Metrics against closed forms, brute force and what a user expects of them (no trained model here;
the tests that need the evaluator are in test_evaluator.py)."""
from importlib import import_module

import numpy as np
import pytest

from pipeline.metrics import (SCALARS, RealReference, canonical_order, class_histogram, classes_covered,
                              classifier_score, density_coverage, evaluate_features, fid, frechet_distance, kid,
                              knn_metrics, knn_radii, precision_recall, real_floor, round_scalars, subsample)
kid_module = import_module("pipeline.metrics.kid")  # `pipeline.metrics.kid` is the function

# ---------------------------------------------------------------- FID


def test_frechet_distance_closed_form_diagonal():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 1.0])
    # diagonal covariances: ||mu1 - mu2||^2 + sum (sqrt(a) - sqrt(b))^2
    expected = (1 + 0 + 4) + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 1) ** 2
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, abs=1e-9)


def test_frechet_distance_closed_form_full_covariance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4))
    s1 = a @ a.T + np.eye(4)
    s2 = 2.5 * s1  # commuting: sqrt(S1 S2) = sqrt(2.5) S1
    expected = np.trace(s1) + np.trace(s2) - 2 * np.sqrt(2.5) * np.trace(s1)
    assert frechet_distance(np.zeros(4), s1, np.zeros(4), s2) == pytest.approx(expected, rel=1e-9)


def test_fid_of_samples_matches_closed_form():
    rng = np.random.default_rng(1)
    a = rng.normal(0.0, 1.0, size=(200_000, 2))
    b = rng.normal([3.0, 0.0], [2.0, 1.0], size=(200_000, 2))
    expected = 9.0 + (1 - 2) ** 2 + (1 - 1) ** 2
    assert fid(a, b) == pytest.approx(expected, rel=0.01)


def test_fid_of_a_set_against_itself_is_zero():
    feats = np.random.default_rng(2).normal(size=(500, 16))
    assert abs(fid(feats, feats)) < 1e-6


def test_near_singular_covariance_is_handled():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(50, 3))
    feats = np.concatenate([base, base[:, :1]], axis=1)  # rank-deficient covariance
    value = fid(feats, feats + 0.01)
    assert np.isfinite(value) and value >= -1e-6
    collapsed = np.tile(feats[:1], (50, 1))  # zero covariance: a collapsed generator
    assert np.isfinite(fid(feats, collapsed))


def test_frechet_distance_rejects_broken_inputs():
    with pytest.raises(ValueError, match="imaginary"):  # not a covariance: sqrt of a negative number
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


# ---------------------------------------------------------------- classifier score


def test_classifier_score_bounds():
    uniform_onehot = np.eye(10)[np.arange(1000) % 10]
    assert classifier_score(uniform_onehot, splits=1) == pytest.approx((10.0, 0.0), rel=1e-9)
    # splits are pseudo-random subsets (order-independent), so each split's classes are only about uniform
    mean, std = classifier_score(uniform_onehot, splits=10)
    assert 9.5 < mean < 10.0 and 0 < std < 0.3
    constant = np.tile(np.eye(10)[3], (1000, 1))
    assert classifier_score(constant, splits=10) == pytest.approx((1.0, 0.0))
    unsure = np.full((100, 10), 0.1)  # uniform predictions carry no information either
    assert classifier_score(unsure, splits=5)[0] == pytest.approx(1.0)
    two_classes = np.eye(10)[np.arange(1000) % 2]
    assert classifier_score(two_classes, splits=1)[0] == pytest.approx(2.0)


# ---------------------------------------------------------------- k-NN metrics


def _brute(real, fake, k):
    """Every distance with the float64 reference formula, then the definitions verbatim."""
    def sq(a, b):
        d = a[:, None, :] - b[None, :, :]
        return (d * d).sum(-1)

    r_real, r_fake = np.sort(sq(real, real), 1)[:, k], np.sort(sq(fake, fake), 1)[:, k]
    d = sq(real, fake)
    in_real, in_fake = d <= r_real[:, None], d <= r_fake[None, :]
    return {"precision": in_real.any(0).mean(), "recall": in_fake.any(1).mean(),
            "density": in_real.sum(0).mean() / k, "coverage": in_real.any(1).mean()}


@pytest.mark.parametrize("case", ["gaussian", "copies", "duplicates", "collapsed", "ties", "offset"])
def test_knn_metrics_equal_brute_force_exactly(case):
    """The float32 screening decides every pair as the float64 reference does, ties included."""
    rng = np.random.default_rng(["gaussian", "copies", "duplicates", "collapsed", "ties", "offset"].index(case))
    real = rng.normal(size=(300, 16)) * 3 + 5
    fake = rng.normal(0.2, 1.0, size=(250, 16)) * 3 + 5
    if case == "copies":
        fake[:100] = real[:100]
    elif case == "duplicates":
        fake[100:150] = fake[100]
        real[:20] = real[0]
    elif case == "collapsed":
        fake[:] = fake[0]
    elif case == "ties":  # values on a coarse grid: many equal distances
        real, fake = np.round(real), np.round(fake)
    elif case == "offset":  # far from the origin, where float32 cancellation is worst
        real, fake = real + 1e4, fake + 1e4
    for k in (1, 3, 5):
        got, want = knn_metrics(real, fake, k), _brute(real, fake, k)
        assert got == pytest.approx(want, abs=0, rel=0), (k, got, want)


def test_knn_radii_match_sklearn():
    from sklearn.neighbors import NearestNeighbors

    x = np.random.default_rng(6).normal(size=(400, 32))
    dist, _ = NearestNeighbors(n_neighbors=4, algorithm="ball_tree").fit(x).kneighbors(x)
    np.testing.assert_allclose(knn_radii(x, 3), dist[:, 3], rtol=1e-12)


def test_precision_recall_extremes():
    rng = np.random.default_rng(5)
    real = rng.normal(size=(400, 4))
    same = real.copy()
    assert precision_recall(real, same, k=3) == (1.0, 1.0)
    far = real + 100.0
    assert precision_recall(real, far, k=3) == (0.0, 0.0)
    assert density_coverage(real, far, k=3) == (0.0, 0.0)
    # identical sets: each point lies in its own ball and in the balls of the k points whose
    # k-NN it is, so density is exactly (k + 1) / k, and every ball holds its own copy
    for k in (1, 3, 5):
        assert density_coverage(real, same, k=k) == (pytest.approx((k + 1) / k, rel=1e-12), 1.0)
    # a collapsed generator: precise but no recall, no coverage
    collapsed = real[:1] + rng.normal(scale=1e-3, size=(400, 4))
    p, r = precision_recall(real, collapsed, k=3)
    assert p == 1.0 and r < 0.05
    assert density_coverage(real, collapsed, k=3)[1] < 0.05


def test_precision_recall_need_enough_points():
    with pytest.raises(ValueError, match="needs at least"):
        precision_recall(np.zeros((3, 2)), np.ones((3, 2)), k=3)


# ---------------------------------------------------------------- classes


def test_class_histogram_and_coverage():
    probs = np.eye(10)[[1, 1, 1, 2, 9]]
    hist = class_histogram(probs)
    assert hist == [0, 3, 1, 0, 0, 0, 0, 0, 0, 1] and classes_covered(hist) == 3
    assert classes_covered([100] * 10) == 10
    assert classes_covered([1000, 19, 0, 0, 0, 0, 0, 0, 0, 0]) == 1  # 1.9% < 2%
    assert classes_covered([0] * 10) == 0


# ---------------------------------------------------------------- order and the whole report


def test_canonical_order_ignores_input_order():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(1000, 8))
    perm = rng.permutation(1000)
    np.testing.assert_array_equal(x[canonical_order(x)], x[perm][canonical_order(x[perm])])
    np.testing.assert_array_equal(np.sort(subsample(x, 100), axis=0), np.sort(subsample(x[perm], 100), axis=0))
    assert len(np.unique(subsample(x, 100), axis=0)) == 100


def _ulp_noise(x: np.ndarray, ulps: int, seed: int = 0) -> np.ndarray:
    """x with each value moved by up to `ulps` units in the last place: what another CPU's SIMD exp
    or convolution order leaves in the last bits."""
    steps = np.random.default_rng(seed).integers(-ulps, ulps + 1, size=x.shape)
    return x + steps * np.spacing(np.abs(x))


def _softmax_probs(n: int, seed: int = 3) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=(n, 10)) * 3
    return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def test_order_and_splits_survive_a_few_ulps_of_float_noise():
    """The same samples computed on another CPU class: each float differs by a few ULPs. The order,
    the subsets, the classifier score's splits and the score itself do not move."""
    probs = _softmax_probs(5000)
    noisy = _ulp_noise(probs, 4)
    assert (noisy != probs).mean() > 0.5  # most values really differ in their last bits
    np.testing.assert_array_equal(canonical_order(probs), canonical_order(noisy))
    a, b = classifier_score(probs, 10), classifier_score(noisy, 10)
    assert a == pytest.approx(b, rel=1e-9, abs=0)
    feats = np.random.default_rng(5).normal(size=(3000, 32))
    np.testing.assert_array_equal(canonical_order(feats), canonical_order(_ulp_noise(feats, 4, seed=1)))
    np.testing.assert_allclose(subsample(feats, 500), subsample(_ulp_noise(feats, 4, seed=3), 500), rtol=1e-14)
    picked = subsample(np.arange(3000), 500, keys=feats)
    np.testing.assert_array_equal(picked, subsample(np.arange(3000), 500, keys=_ulp_noise(feats, 4, seed=2)))
    # ... and a value that changes beyond its rounding moves only its own row, not the rest
    moved = probs.copy()
    moved[17] = np.roll(moved[17], 1)
    order, order_moved = canonical_order(probs), canonical_order(moved)
    assert list(order[order != 17]) == list(order_moved[order_moved != 17])


def test_classifier_score_ordered_by_the_images_ignores_the_probabilities_last_bits():
    """The evaluate stage orders by the generated images' uint8 bytes: then even noise far above
    a few ULPs (an fp32 convolution's 1e-7) leaves the splits exactly as they were."""
    rng = np.random.default_rng(9)
    images = rng.integers(0, 256, size=(2000, 28, 28), dtype=np.uint8)
    probs = _softmax_probs(2000, seed=4)
    noisy = probs * (1 + rng.normal(scale=1e-7, size=probs.shape))
    a, b = classifier_score(probs, 10, keys=images), classifier_score(noisy, 10, keys=images)
    assert a == pytest.approx(b, rel=1e-6)
    perm = rng.permutation(2000)
    assert classifier_score(probs[perm], 10, keys=images[perm]) == pytest.approx(a, rel=1e-12)
    with pytest.raises(ValueError, match="keys"):
        classifier_score(probs, 10, keys=images[:10])


def test_duplicates_are_spread_over_the_splits():
    """A collapsed generator's identical images must not all land in one split."""
    images = np.zeros((1000, 28, 28), np.uint8)
    images[:500] = 1
    order = canonical_order(images)
    first_split = images[order[:100]]
    assert 20 < (first_split[:, 0, 0] == 1).sum() < 80


def _report(seed=4, n_real=300, n_fake=700):
    rng = np.random.default_rng(seed)
    real, fake = rng.normal(size=(n_real, 8)), rng.normal(0.3, 1.0, size=(n_fake, 8))
    return real, rng.dirichlet(np.ones(10), size=n_real), fake, rng.dirichlet(np.ones(10) * 0.3, size=n_fake)


def test_metrics_do_not_depend_on_sample_order():
    real, real_p, fake, fake_p = _report()
    pr, pf = np.random.default_rng(0).permutation(len(real)), np.random.default_rng(1).permutation(len(fake))
    a = evaluate_features(real, real_p, fake, fake_p, k=3, splits=10)
    b = evaluate_features(real[pr], real_p[pr], fake[pf], fake_p[pf], k=3, splits=10)
    assert a.keys() == b.keys()
    for key in ("precision", "recall", "density", "coverage", "class_histogram", "classes_covered", "n_knn"):
        assert a[key] == b[key], key  # exactly
    for key in ("fid", "kid", "kid_se", "classifier_score", "classifier_score_std"):
        assert a[key] == pytest.approx(b[key], rel=1e-9), key


def test_evaluate_features_report():
    real, real_p, fake, fake_p = _report()
    m = evaluate_features(real, real_p, fake, fake_p, k=3, splits=10)
    assert set(m) == {"fid", "fid_se", "kid", "kid_se", "classifier_score", "classifier_score_std", "precision", "recall",
                      "density", "coverage", "classes_covered", "class_histogram", "n_knn"}
    assert set(SCALARS) <= set(m) and {"kid", "kid_se"} <= set(SCALARS)
    assert (m["kid"], m["kid_se"]) == kid(real, fake) and m["kid"] > 3 * m["kid_se"] > 0
    assert m["n_knn"] == 300 and sum(m["class_histogram"]) == 700 and len(m["class_histogram"]) == 10
    assert m["fid"] == pytest.approx(fid(real, fake))
    assert 1.0 <= m["classifier_score"] <= 10.0 and m["classifier_score_std"] > 0
    for key in ("precision", "recall", "coverage"):
        assert 0.0 <= m[key] <= 1.0
    # the same set as generated: the best possible scores
    same = evaluate_features(real, real_p, real, real_p, k=3, splits=1)
    assert abs(same["fid"]) < 1e-6 and same["precision"] == same["recall"] == same["coverage"] == 1.0


def test_real_reference_matches_fid():
    rng = np.random.default_rng(8)
    real, fake = rng.normal(size=(500, 6)), rng.normal(0.5, 1.2, size=(400, 6))
    ref = RealReference.from_features(real)
    assert frechet_distance(*RealReference.from_features(fake).__dict__.values(), ref.mu, ref.sigma) == \
        pytest.approx(fid(fake, real), rel=1e-12)


# ---------------------------------------------------------------- KID


def _mmd2_brute(x, y):
    """Unbiased MMD^2 with the cubic polynomial kernel, straight from its definition."""
    d = x.shape[1]
    kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
    m, n = len(x), len(y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
            - 2 * kxy.mean())


@pytest.mark.parametrize("tile", [7, 64, 4096])  # tiles across, inside and beyond the jackknife groups
def test_kid_equals_brute_force_and_its_jackknife(monkeypatch, tile):
    monkeypatch.setattr(kid_module, "TILE", tile)
    rng = np.random.default_rng(20)
    x, y = rng.normal(size=(300, 8)), rng.normal(0.1, 1.0, size=(230, 8))
    estimate, se = kid(x, y, groups=7)
    assert estimate == pytest.approx(_mmd2_brute(x, y), rel=1e-12)
    # the delete-a-group jackknife, done the slow way: groups contiguous in canonical order
    xs, ys = x[canonical_order(x)], y[canonical_order(y)]
    gx, gy = np.array_split(np.arange(300), 7), np.array_split(np.arange(230), 7)
    loo = np.array([_mmd2_brute(np.delete(xs, gx[g], 0), np.delete(ys, gy[g], 0)) for g in range(7)])
    assert se == pytest.approx(np.sqrt(6 / 7 * np.sum((loo - loo.mean()) ** 2)), rel=1e-9)


def test_kid_is_unbiased_and_its_se_covers_its_spread():
    """Two samples of one distribution: KID averages ~0 (FID would not), and the SE matches the estimates'
    spread (the jackknife is a little conservative at the null, Efron-Stein)."""
    rng = np.random.default_rng(21)
    est, ses = [], []
    for _ in range(60):
        e, s = kid(rng.normal(size=(200, 6)), rng.normal(size=(200, 6)))
        est.append(e)
        ses.append(s)
    est, ses = np.array(est), np.array(ses)
    assert abs(est.mean()) < 3 * est.std(ddof=1) / np.sqrt(len(est))
    assert 0.7 < ses.mean() / est.std(ddof=1) < 2.0
    shifted = kid(rng.normal(size=(200, 6)), rng.normal(0.5, 1.0, size=(200, 6)))
    assert shifted[0] > 5 * shifted[1]


def test_kid_does_not_depend_on_order_and_orders_by_its_keys():
    rng = np.random.default_rng(22)
    x, y = rng.normal(size=(120, 5)), rng.normal(size=(90, 5))
    px, py = rng.permutation(120), rng.permutation(90)
    assert kid(x[px], y[py]) == pytest.approx(kid(x, y), rel=1e-12)
    # keys (the images) decide the groups: the same keys give the same SE, whatever the features' order
    keys_x, keys_y = rng.integers(0, 256, (120, 4), dtype=np.uint8), rng.integers(0, 256, (90, 4), dtype=np.uint8)
    assert (kid(x[px], y[py], keys_x[px], keys_y[py])[1] ==
            pytest.approx(kid(x, y, keys_x, keys_y)[1], rel=1e-12))


def test_kid_rejects_what_it_cannot_estimate():
    with pytest.raises(ValueError, match="at least 4 rows"):
        kid(np.zeros((3, 2)), np.zeros((10, 2)))
    with pytest.raises(ValueError, match="shapes do not match"):
        kid(np.zeros((10, 2)), np.zeros((10, 3)))


def test_kid_is_stored_with_its_own_decimals():
    stored = round_scalars({"fid": 1.23456789, "kid": 1.23456789e-4, "kid_se": 2.5e-6, "classes_covered": 10},
                           ("fid", "kid", "kid_se", "classes_covered"))
    assert stored == {"fid": 1.23457, "kid": 0.00012346, "kid_se": 2.5e-6, "classes_covered": 10}


def test_real_floor_halves_and_sizes():
    rng = np.random.default_rng(23)
    feats = rng.normal(size=(2000, 32))
    probs = rng.dirichlet(np.ones(10), size=2000)
    keys = rng.integers(0, 256, (2000, 28, 28), dtype=np.uint8)
    f = real_floor(feats, probs, keys, k=3, splits=10)
    assert (f["n_real"], f["n_fake"], f["n_knn"], f["n_quarters"], f["n_extrapolated"]) == (1000, 1000, 1000, 500, 2000)
    # one distribution: FID's bias is positive and shrinks with N, about as 1/N; KID's is ~0
    assert f["fid_quarters"] > f["fid"] > f["fid_extrapolated"] > 0 and f["fid_extrapolated"] == pytest.approx(f["fid"] / 2)
    assert f["fid_quarters"] / f["fid"] == pytest.approx(2.0, rel=0.3)
    assert abs(f["kid"]) < 3 * f["kid_se"]
    # the halves are disjoint and chosen by the keys, not by the rows' order
    p = rng.permutation(2000)
    assert real_floor(feats[p], probs[p], keys[p])["fid"] == pytest.approx(f["fid"], rel=1e-9)


def test_one_registry_names_every_metric_once():
    """The lists the pipeline writes and reads come from pipeline/metrics/registry.py: evaluate.json's order
    names only registered metrics (or what only the mean over draws has), each once; the report compares
    qualities only, with their direction; every metric evaluate_features computes is registered."""
    from pipeline.metrics import registry as r

    names = [m.name for m in r.REGISTRY]
    assert len(names) == len(set(names))
    assert set(r.EVALUATE_ORDER) <= set(r.SCALARS) | set(r.DRAWS_ONLY) and len(set(r.EVALUATE_ORDER)) == len(r.EVALUATE_ORDER)
    assert all(r.BY_NAME[k].better in ("lower", "higher") for k in r.IN_CELLS) and set(r.COMPARED) <= set(r.IN_CELLS)
    assert set(r.DRAWN) <= set(r.COMPARED)
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(40, 8)), rng.normal(0.5, 1, (40, 8))
    probs = rng.dirichlet(np.ones(10), 40)
    assert set(r.SCALARS) <= set(evaluate_features(real, probs, fake, probs, k=3, splits=2))
