"""The MNIST evaluators: small CNNs trained on the prepared training split.

An evaluator is both the feature extractor (its penultimate layer, for FID and precision/recall) and
the judge (its class probabilities, for the classifier score and the class histogram). Inception
features are unreliable on MNIST; a good MNIST classifier is the field's practice. Evaluator A
(`cnn`, stage train_evaluator) gives every published figure; evaluator B (`lenet` by default, stage
train_evaluator_b, another seed) scores the same samples again, so a verdict can be checked against
the judge's own choices. Both train and embed through the same functions below.

Architecture `cnn`, evaluator A (about 7.7 M multiply-adds an image, chosen so that embedding 10,000
images takes a couple of seconds on 2 CPU cores):

    conv3x3(1->32)-BN-ReLU-maxpool   28 -> 14
    conv3x3(32->64)-BN-ReLU-maxpool  14 -> 7
    conv3x3(64->128)-BN-ReLU-maxpool 7 -> 4 (ceil)
    flatten(2048) -> linear(128)      = features (penultimate, before the ReLU)
    ReLU-dropout(0.3)-linear(10)      = logits

Architecture `lenet` (LeNet-5-like, about 2.1 M multiply-adds an image; no batch norm):

    conv5x5(20)-ReLU-maxpool          28 -> 24 -> 12
    conv5x5(50)-ReLU-maxpool          12 -> 8 -> 4
    flatten(800) -> linear(256)       = features (penultimate, before the ReLU)
    ReLU-dropout(0.5)-linear(10)      = logits

Inference (`embed`) runs a copy with each BatchNorm folded into its convolution, in channels_last
memory format, float32 throughout; features and probabilities are returned as float64.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import UserError
from pipeline.fileio import torch_load
from pipeline.optim import Adam

log = logging.getLogger(__name__)

EVALUATOR_FILE = Path("models/evaluator.pt")  # the train_evaluator stage's output
EVALUATOR_B_FILE = Path("models/evaluator_b.pt")  # the train_evaluator_b stage's output

FEATURES = 128  # evaluator A's (`cnn`) feature size
LENET_FEATURES = 256
EMBED_BATCH = 500  # 250..1000 are within noise of each other on 2 cores; 500 had the steadiest timings


def to_float(images_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N,28,28) -> float (N,1,28,28) in [-1, 1], the convention of every network here."""
    x = torch.as_tensor(images_uint8)
    return x.float().div(127.5).sub(1).unsqueeze(1)


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"expected uint8 images of shape (N, 28, 28), got {images.dtype} {images.shape}")
    return images


class MnistClassifier(nn.Module):
    """Architecture `cnn` (evaluator A)."""
    features_dim = FEATURES

    def __init__(self):
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                    nn.MaxPool2d(2, ceil_mode=True)]

        self.body = nn.Sequential(*block(1, 32), *block(32, 64), *block(64, 128), nn.Flatten(),
                                  nn.Linear(128 * 4 * 4, FEATURES))
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(0.3), nn.Linear(FEATURES, 10))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, 128), before the ReLU (closer to Gaussian, as FID assumes)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class LeNetClassifier(nn.Module):
    """Architecture `lenet`: other filters (5x5, no padding, no batch norm) and a wider feature layer
    than `cnn`, so that it sees digits through other features, not a re-seeded copy of the same ones."""
    features_dim = LENET_FEATURES

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 20, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                  nn.Conv2d(20, 50, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Flatten(),
                                  nn.Linear(50 * 4 * 4, LENET_FEATURES))
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(0.5), nn.Linear(LENET_FEATURES, 10))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, 256), before the ReLU."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


# params `evaluate.classifier_b.arch` -> the network; evaluate.classifier (A) is always `cnn`
ARCHITECTURES: dict[str, type[nn.Module]] = {"cnn": MnistClassifier, "lenet": LeNetClassifier}


def inference_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy with BatchNorm folded into the preceding convolutions, channels_last.

    Same function as `model.eval()` up to float32 rounding (about 1e-6 relative); about twice as fast
    on 2 CPU cores (10,000 images: 1.0-1.3 s against 2.3 s, best of 5 on a shared machine)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(model).eval()
    layers = list(fused.body)
    out: list[nn.Module] = []
    i = 0
    while i < len(layers):
        if isinstance(layers[i], nn.Conv2d) and i + 1 < len(layers) and isinstance(layers[i + 1], nn.BatchNorm2d):
            out.append(fuse_conv_bn_eval(layers[i], layers[i + 1]))
            i += 2
        else:
            out.append(layers[i])
            i += 1
    fused.body = nn.Sequential(*out)
    return fused.to(memory_format=torch.channels_last)


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


def train_classifier(x_train: np.ndarray, y_train: np.ndarray, cfg, progress: bool = True,
                     desc: str = "evaluator") -> nn.Module:
    """Trains an evaluator on uint8 images (N,28,28) and int labels; returns it in eval mode.

    `cfg` is a ClassifierParams (epochs, batch_size, lr, seed: architecture `cnn`) or a
    SecondClassifierParams (the same and `arch`). Adam with a one-cycle schedule
    (peak 3 x lr) and random shifts of up to 2 pixels. Deterministic on CPU for a given cfg.seed:
    initialisation, shuffling, augmentation and dropout all draw from seeded generators."""
    from tqdm import tqdm

    x_train = _check_images(x_train)
    y = torch.as_tensor(np.asarray(y_train), dtype=torch.long)
    if len(y) != len(x_train) or len(y) == 0:
        raise ValueError(f"{len(x_train)} images but {len(y)} labels")
    torch.manual_seed(cfg.seed)  # initialisation and dropout
    gen = torch.Generator().manual_seed(cfg.seed)  # shuffling and augmentation
    x = to_float(x_train)
    model = ARCHITECTURES[getattr(cfg, "arch", "cnn")]()
    opt = Adam(model.parameters(), lr=cfg.lr)
    batch = min(cfg.batch_size, len(x))
    steps_per_epoch = max(len(x) // batch, 1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr * 3, total_steps=cfg.epochs * steps_per_epoch)
    model.train()
    bar = tqdm(total=cfg.epochs * steps_per_epoch, desc=desc, unit="batch", disable=not progress,
               mininterval=1.0)
    for epoch in range(cfg.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(steps_per_epoch):
            idx = perm[i * batch:(i + 1) * batch]
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
def embed_float(model: nn.Module, images: torch.Tensor, batch: int = EMBED_BATCH,
                fused: nn.Module | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Like `embed`, for float images (N,1,28,28) in [-1, 1]."""
    net = fused if fused is not None else inference_copy(model)
    feats = np.empty((len(images), model.features_dim), dtype=np.float64)
    probs = np.empty((len(images), 10), dtype=np.float64)
    for i in range(0, len(images), batch):
        x = images[i:i + batch].float().contiguous(memory_format=torch.channels_last)
        f = net.features(x)
        feats[i:i + len(f)] = f.double().numpy()
        probs[i:i + len(f)] = torch.softmax(net.head(f).double(), dim=1).numpy()
    return feats, probs


def embed(model: nn.Module, images_uint8: np.ndarray, batch: int = EMBED_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """(features float64 (N, model.features_dim), probabilities float64 (N, 10)) of uint8 images (N, 28, 28).

    Batched, under inference_mode, on a BN-folded channels_last copy of the model (see
    `inference_copy`); the model itself is not modified. Each image's outputs do not depend on
    the other images in its batch (eval mode), up to float32 rounding of the convolution kernels."""
    images = _check_images(images_uint8)
    net = inference_copy(model)
    feats = np.empty((len(images), model.features_dim), dtype=np.float64)
    probs = np.empty((len(images), 10), dtype=np.float64)
    for i in range(0, len(images), batch):
        f, p = embed_float(model, to_float(images[i:i + batch]), batch=batch, fused=net)
        feats[i:i + len(f)], probs[i:i + len(f)] = f, p
    return feats, probs


def accuracy(model: nn.Module, x_uint8: np.ndarray, y: np.ndarray) -> float:
    """Share of images whose most probable class is the label."""
    _, probs = embed(model, x_uint8)
    return float((probs.argmax(1) == np.asarray(y)).mean())


def save_evaluator(model: nn.Module, path: str | Path = EVALUATOR_FILE) -> None:
    """Atomically writes the state_dict (tensors only, so it loads with weights_only=True)."""
    from pipeline.fileio import torch_save

    torch_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)


def weights_sha256(path: str | Path = EVALUATOR_FILE) -> str:
    """The evaluator's identity: sha256 over its tensors (names, dtypes, shapes, bytes), not the file's
    bytes, which also depend on torch's archive format."""
    import hashlib

    state = torch_load(Path(path))
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def architecture_of(state: dict) -> type[nn.Module]:
    """The network whose parameter names a saved state_dict has (each architecture's are its own); the
    `cnn` when none matches, so that its load reports the mismatch. Built on the meta device: no
    memory, and no draw from torch's global generator (a caller's later draws stay what they were)."""
    for cls in ARCHITECTURES.values():
        with torch.device("meta"):
            names = set(cls().state_dict())
        if names == set(state):
            return cls
    return MnistClassifier


def load_evaluator(path: str | Path = EVALUATOR_FILE, stage: str = "train_evaluator") -> nn.Module:
    """A saved evaluator of either architecture (told apart by its parameter names), in eval mode.
    `stage`: the DVC stage that writes `path`, which the errors tell the user to run."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} is missing: run `dvc repro {stage}` first")
    state = torch_load(path)
    model = architecture_of(state)()
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError) as e:
        detail = " ".join(line.strip() for line in str(e).splitlines()[:2])[:200]
        raise UserError(f"{path} is not an evaluator of this version ({detail}): "
                        f"rerun `dvc repro {stage}`") from None
    return model.eval()
