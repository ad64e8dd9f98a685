"""Metrics against closed forms and against what a user expects of them."""
import numpy as np
import pytest
import scipy.ndimage

from pipeline.metrics import (classes_covered, class_histogram, classifier_score, density_coverage,
                              evaluate_features, fid, frechet_distance, precision_recall)


def test_frechet_distance_closed_form_diagonal():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 1.0])
    # diagonal: sum (sqrt(a) - sqrt(b))^2 over the variances
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 1) ** 2
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
    expected = 9.0 + (1 - 2) ** 2
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


def test_classifier_score_bounds():
    uniform_onehot = np.eye(10)[np.arange(1000) % 10]
    assert classifier_score(uniform_onehot, splits=10)[0] == pytest.approx(10.0, rel=1e-6)
    constant = np.tile(np.eye(10)[3], (1000, 1))
    assert classifier_score(constant, splits=10) == pytest.approx((1.0, 0.0))
    soft = np.full((100, 10), 0.1)
    assert classifier_score(soft, splits=5)[0] == pytest.approx(1.0)


def test_metrics_do_not_depend_on_sample_order():
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(300, 8)), rng.normal(0.3, 1.0, size=(300, 8))
    probs = rng.dirichlet(np.ones(10), size=300)
    perm = rng.permutation(300)
    a = evaluate_features(real, probs, fake, probs, k=3, splits=1)
    b = evaluate_features(real[perm], probs[perm], fake[perm], probs[perm], k=3, splits=1)
    for key in ("fid", "classifier_score", "precision", "recall", "density", "coverage", "class_histogram"):
        assert a[key] == pytest.approx(b[key], rel=1e-9), key


def test_precision_recall_extremes():
    rng = np.random.default_rng(5)
    real = rng.normal(size=(400, 4))
    same = real.copy()
    assert precision_recall(real, same, k=3) == (1.0, 1.0)
    far = real + 100.0
    assert precision_recall(real, far, k=3) == (0.0, 0.0)
    density, coverage = density_coverage(real, same, k=3)
    assert coverage == 1.0 and density >= 1.0
    # a collapsed generator: precise but no recall
    collapsed = real[:1] + rng.normal(scale=1e-3, size=(400, 4))
    p, r = precision_recall(real, collapsed, k=3)
    assert p == 1.0 and r < 0.05


def test_class_histogram_and_coverage():
    probs = np.eye(10)[[1, 1, 1, 2, 9]]
    hist = class_histogram(probs)
    assert hist == [0, 3, 1, 0, 0, 0, 0, 0, 0, 1] and classes_covered(hist) == 3
    assert classes_covered([100] * 10) == 10


@pytest.fixture(scope="module")
def trained(request):
    from tests_support import trained_evaluator

    return trained_evaluator()


def _blur(x, sigma):
    return np.stack([scipy.ndimage.gaussian_filter(i.astype(np.float64), sigma) for i in x]).clip(0, 255).astype(np.uint8)


def _noise(x, std, rng):
    return (x.astype(np.float64) + rng.normal(0, std, x.shape)).clip(0, 255).astype(np.uint8)


def test_fid_grows_as_real_images_are_corrupted(trained):
    from pipeline.evaluator import embed

    model, data = trained
    real_f, _ = embed(model, data.x_test)
    train = data.x_train[:2000]
    rng = np.random.default_rng(0)
    noise = [fid(real_f, embed(model, _noise(train, s, rng))[0]) for s in (0, 20, 50, 90)]
    blur = [fid(real_f, embed(model, _blur(train, s))[0]) for s in (0.01, 0.7, 1.2, 2.0)]
    assert noise == sorted(noise) and noise[-1] > 3 * noise[0], noise
    assert blur == sorted(blur) and blur[-1] > 3 * blur[0], blur
