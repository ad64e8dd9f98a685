"""A short training and the metrics on fixed arrays, printed as JSON: tests/test_recorded.py compares
them with the values recorded before training.py and metrics.py were split into modules (the split
must not change one bit). Runs on PyTorch's and oneDNN's baseline instruction sets and the kernel's
portable build, one thread, fp32, so any x86-64 CPU of one vendor gives the same bits (Intel's
and AMD's differ: tests/test_recorded.py keeps one recording each). The metrics run on the
machine's own numpy code paths: their subsets and splits must not depend on the last bits (the
classifier score's probabilities come from numpy's SIMD exp, which differs between AVX2 and AVX-512)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import torch


def training() -> dict:
    from pipeline.config import Params, with_override
    try:
        from pipeline.trainer import Trainer
        from pipeline.runtime import resolve_runtime
    except ImportError:  # before the split
        from pipeline.training import Trainer, resolve_runtime  # noqa: F401

    torch.set_num_threads(1)
    p0 = Params()
    p = with_override(p0, {"train.device": "cpu", "train.precision": "fp32", "train.batch_size": 8,
                           "train.steps": 3, "train.attention_kernel": "kernel", "train.ema_start": 1,
                           # the recipe the values were recorded with (R1 came later)
                           **({"train.r1": 0.0} if hasattr(p0.train, "r1") else {})})
    rt = resolve_runtime(p)
    data = np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)
    trainer = Trainer(p, data, "recorded", rt)
    losses = [{k: float(v) for k, v in trainer.train_step().items()} for _ in range(3)]
    digest = hashlib.sha256()
    for net in (trainer.G, trainer.D, trainer.G_ema):
        for name, value in sorted(net.state_dict().items()):
            digest.update(name.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return {"weights_sha256": digest.hexdigest(), "losses": losses, "attention": rt.attention_paths}


def metrics() -> dict:
    from pipeline import metrics as m

    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(300, 16)), rng.normal(0.3, 1.1, size=(280, 16))
    logits = rng.normal(size=(280, 10)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return {"fid": m.fid(real, fake), "classifier_score": list(m.classifier_score(probs, 10)),
            "knn": m.knn_metrics(real, fake, 3), "histogram": m.class_histogram(probs),
            "order": m.canonical_order(real[:20]).tolist(), "subsample": m.subsample(real, 7).sum()}


if __name__ == "__main__":
    import sys

    # `metrics`: only the metrics part (tests/test_recorded.py runs it again with numpy held to AVX2)
    only_metrics = sys.argv[1:] == ["metrics"]
    print(json.dumps({"metrics": metrics()} if only_metrics else {"training": training(), "metrics": metrics()},
                     indent=1))
