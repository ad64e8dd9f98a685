"""The reference's features kept across processes (pipeline.memo): a value read back is the value computing
gives, bit for bit, and anything that decides the bits (weights, images, threads) is a new key."""
import numpy as np
import torch

from pipeline import memo
from pipeline.evaluator import MnistClassifier, embed
from pipeline.metrics.kid import kid


def _model(seed: int) -> MnistClassifier:
    torch.manual_seed(seed)
    return MnistClassifier().eval()


def _images(seed: int, n: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def test_a_kept_value_is_the_computed_one_and_any_input_is_a_new_key(tmp_path, monkeypatch):
    monkeypatch.setenv(memo.CACHE_ENV, str(tmp_path))
    model, images = _model(0), _images(0)
    want = embed(model, images)
    first = memo.embed_reference(model, images)
    assert len(list(tmp_path.iterdir())) == 1
    again = memo.embed_reference(model, images)  # read back
    for a, b, c in zip(want, first, again):
        assert a.dtype == c.dtype and a.tobytes() == b.tobytes() == c.tobytes()
    key = memo.features_key(model, images)
    assert memo.features_key(_model(1), images) != key
    assert memo.features_key(model, _images(1)) != key
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert memo.features_key(model, images) != key
    finally:
        torch.set_num_threads(threads)
    assert memo.features_key(model, images) == key


def test_a_broken_file_is_computed_again_and_off_means_off(tmp_path, monkeypatch):
    monkeypatch.setenv(memo.CACHE_ENV, str(tmp_path))
    model, images = _model(0), _images(2)
    memo.embed_reference(model, images)
    (path,) = tmp_path.iterdir()
    path.write_bytes(b"not an npz")  # a disk gone bad
    assert memo.embed_reference(model, images)[0].tobytes() == embed(model, images)[0].tobytes()
    home = tmp_path / "home"  # where the default folder would go
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv(memo.CACHE_ENV, "")
    assert memo.cache_dir() is None
    assert memo.embed_reference(model, _images(3))[0].tobytes() == embed(model, _images(3))[0].tobytes()
    assert not home.exists() and len(list(tmp_path.iterdir())) == 1
    monkeypatch.delenv(memo.CACHE_ENV)
    assert memo.cache_dir() == home / ".cache" / "sagan-pipeline"  # unset: the default


def test_kid_keeps_the_reference_sums_without_changing_a_digit():
    rng = np.random.default_rng(0)
    real, fake, other = rng.normal(size=(200, 8)), rng.normal(0.3, 1, (100, 8)), rng.normal(0.1, 1, (120, 8))
    first = kid(real, fake)
    assert kid(real, other) != first  # the kept sums are the reference's only
    assert kid(real, fake) == first  # read back: the same digits
    assert kid(real[::-1].copy(), fake) == first  # the reference in another order: its canonical order's sums


def test_kid_reference_sums_kept_on_disk_are_the_computed_ones(tmp_path, monkeypatch):
    """A second process (here: the in-process sums cleared) reads the reference's KID sums from the cache
    and gets the same KID to the last digit; without the cache, the same again."""
    import importlib

    kid_module = importlib.import_module("pipeline.metrics.kid")  # the module (pipeline.metrics.kid is the function)

    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(300, 8)), rng.normal(0.2, 1, (150, 8))
    monkeypatch.setenv(memo.CACHE_ENV, "")
    kid_module._REAL_SUMS.clear()
    computed = kid(real, fake)
    monkeypatch.setenv(memo.CACHE_ENV, str(tmp_path))
    kid_module._REAL_SUMS.clear()
    assert kid(real, fake) == computed
    (path,) = [p for p in tmp_path.iterdir() if p.name.startswith("kid-sums-")]
    kid_module._REAL_SUMS.clear()
    assert kid(real, fake) == computed  # read back from the file
    path.write_bytes(b"not an npy")  # a disk gone bad: computed again
    kid_module._REAL_SUMS.clear()
    assert kid(real, fake) == computed
    kid_module._REAL_SUMS.clear()
    assert kid(real, rng.normal(0.2, 1, (150, 8))) != computed
