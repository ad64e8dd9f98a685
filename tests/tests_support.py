"""Shared, expensive test fixtures, built once per test session."""
import functools


@functools.lru_cache(maxsize=1)
def trained_evaluator():
    """The evaluator trained with the shipped params on the embedded data, and that data."""
    import tempfile
    from pathlib import Path

    import torch

    from pipeline.config import Params
    from pipeline.data import load_prepared, prepare
    from pipeline.evaluator import train_classifier

    torch.set_num_threads(2)
    p = Params()
    out = Path(tempfile.mkdtemp()) / "prepared"
    prepare(p, out_dir=out)
    data = load_prepared(out)
    return train_classifier(data.x_train, data.y_train, p.evaluate.classifier, progress=False), data
