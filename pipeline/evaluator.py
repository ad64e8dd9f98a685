"""The MNIST evaluator: a small CNN trained on the prepared training split.

It is both the feature extractor (its penultimate layer, for FID and precision/recall) and the
judge (its class probabilities, for the classifier score and the class histogram). Inception
features are unreliable on MNIST; a good MNIST classifier is the field's practice.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import UserError
from pipeline.fileio import torch_load

log = logging.getLogger(__name__)

FEATURES = 128


def to_float(images_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N,28,28) -> float (N,1,28,28) in [-1, 1], the convention of every network here."""
    x = torch.as_tensor(images_uint8)
    return x.float().div(127.5).sub(1).unsqueeze(1)


class MnistClassifier(nn.Module):
    def __init__(self):
        super().__init__()

        def conv(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(*conv(1, 32), *conv(32, 32), nn.MaxPool2d(2),
                                  *conv(32, 64), *conv(64, 64), nn.MaxPool2d(2), nn.Flatten(),
                                  nn.Linear(64 * 7 * 7, FEATURES))
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(0.3), nn.Linear(FEATURES, 10))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, before the ReLU (closer to Gaussian, so FID's assumption holds better)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translations by up to max_shift pixels: the augmentation that matters on small MNIST."""
    pad = F.pad(x, (max_shift,) * 4, value=-1.0)
    n = len(x)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(28))[:, :, None].expand(n, 28, 28)
    cols = (dx[:, None] + torch.arange(28))[:, None, :].expand(n, 28, 28)
    idx = torch.arange(n)[:, None, None]
    return pad[idx, 0, rows, cols].unsqueeze(1)


def train_classifier(x_train: np.ndarray, y_train: np.ndarray, cfg, progress: bool = True) -> MnistClassifier:
    """Deterministic for a given cfg.seed (CPU)."""
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    x, y = to_float(x_train), torch.as_tensor(y_train, dtype=torch.long)
    model = MnistClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps_per_epoch = max(len(x) // cfg.batch_size, 1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr * 3, total_steps=cfg.epochs * steps_per_epoch)
    model.train()
    bar = tqdm(total=cfg.epochs * steps_per_epoch, desc="evaluator", unit="batch", disable=not progress,
               mininterval=1.0)
    for epoch in range(cfg.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(steps_per_epoch):
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            loss = F.cross_entropy(model(_shift(x[idx], gen)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
        bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
    bar.close()
    return model.eval()


@torch.inference_mode()
def embed(model: MnistClassifier, images_uint8: np.ndarray, batch: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """(features float64 (N, 128), probabilities float64 (N, 10)) of uint8 images."""
    model.eval()
    feats, probs = [], []
    for i in range(0, len(images_uint8), batch):
        f = model.features(to_float(images_uint8[i:i + batch]))
        feats.append(f.double())
        probs.append(torch.softmax(model.head(f).double(), dim=1))
    if not feats:
        return np.zeros((0, FEATURES)), np.zeros((0, 10))
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()


def accuracy(model: MnistClassifier, x_uint8: np.ndarray, y: np.ndarray) -> float:
    _, probs = embed(model, x_uint8)
    return float((probs.argmax(1) == np.asarray(y)).mean())


def load_evaluator(path: Path = Path("models/evaluator.pt")) -> MnistClassifier:
    if not Path(path).exists():
        raise UserError(f"{path} is missing: run `dvc repro train_evaluator` first")
    model = MnistClassifier()
    model.load_state_dict(torch_load(path))
    return model.eval()
