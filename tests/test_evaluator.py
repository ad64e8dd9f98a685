"""The evaluator is good enough to judge: accuracy target on the embedded data, deterministic."""
import numpy as np
import torch

from pipeline.evaluator import MnistClassifier, accuracy, embed, load_evaluator
from pipeline.fileio import torch_save
from tests_support import trained_evaluator


def test_accuracy_reaches_target_on_embedded_data():
    model, data = trained_evaluator()
    assert accuracy(model, data.x_test, data.y_test) >= 0.96


def test_embed_shapes_and_probabilities():
    model, data = trained_evaluator()
    feats, probs = embed(model, data.x_test[:37], batch=10)
    assert feats.shape == (37, 128) and probs.shape == (37, 10)
    assert feats.dtype == np.float64
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-9)


def test_saved_evaluator_loads_with_weights_only(tmp_path):
    model, data = trained_evaluator()
    torch_save(model.state_dict(), tmp_path / "e.pt")
    again = load_evaluator(tmp_path / "e.pt")
    a, _ = embed(model, data.x_test[:20])
    b, _ = embed(again, data.x_test[:20])
    np.testing.assert_array_equal(a, b)
    assert isinstance(again, MnistClassifier) and not again.training
