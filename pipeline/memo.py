"""The reference's features, embedded once per evaluator and machine, not once per process (and KID's
kernel sums over the reference, computed once per feature set and machine).

Every run scores its images against the same 10,000 t10k digits through the same evaluator: train (its
quick FID and checkpoint evaluations) and evaluate (evaluators A and B) each embedded them again, ~4 s a
time on 2 cores, the largest cost of a short run. The features are a pure function of the evaluator's
weights, the images, the embedding code and what decides float bits on this machine (torch's version,
its thread count, the CPU's instruction set as torch and oneDNN use it), so they are kept on disk under a
hash of all of these, and a key that differs in any of them computes anew: a value read back is the
value computing would give, bit for bit (tests/test_memo.py).

The folder: $SAGAN_CACHE_DIR, default ~/.cache/sagan-pipeline; an empty SAGAN_CACHE_DIR turns it off.
Files are written atomically, so a process killed mid-write leaves no half file."""
from __future__ import annotations

import functools
import hashlib
import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CACHE_ENV = "SAGAN_CACHE_DIR"


def cache_dir() -> Path | None:
    """Where the features are kept, or None when caching is off."""
    value = os.environ.get(CACHE_ENV)
    if value is None:
        return Path.home() / ".cache" / "sagan-pipeline"
    return Path(value) if value else None


@functools.lru_cache(maxsize=1)
def _embedding_code() -> str:
    """The source of the embedding (pipeline/evaluator.py): a change to it is a new key."""
    return hashlib.sha256((Path(__file__).parent / "evaluator.py").read_bytes()).hexdigest()


def _machine() -> str:
    import torch

    return "|".join([torch.__version__, str(torch.get_num_threads()), torch.backends.cpu.get_cpu_capability(),
                     os.environ.get("ATEN_CPU_CAPABILITY", ""), os.environ.get("ONEDNN_MAX_CPU_ISA", "")])


def features_key(model, images_uint8: np.ndarray) -> str:
    """The hash of everything that decides embed(model, images)'s bits."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    images = np.ascontiguousarray(images_uint8)
    h.update(f"{images.dtype}{images.shape}".encode())
    h.update(images.tobytes())
    h.update(f"{type(model).__name__}|{_embedding_code()}|{_machine()}".encode())
    return h.hexdigest()


def embed_reference(model, images_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pipeline.evaluator.embed(model, images_uint8), read from the cache when it holds this key."""
    from pipeline.evaluator import embed

    folder = cache_dir()
    if folder is None:
        return embed(model, images_uint8)
    path = folder / f"features-{features_key(model, images_uint8)[:32]}.npz"
    kept = _kept(path, ("features", "probs"), lambda: dict(zip(("features", "probs"), embed(model, images_uint8))))
    return kept["features"], kept["probs"]


def _kept(path: Path, names: tuple[str, ...], compute) -> dict[str, np.ndarray]:
    """The arrays `names` of the .npz at `path`, or compute()'s (a dict of them), written there atomically
    for the next process (a read-only folder: a warning, and the value computed)."""
    from pipeline.fileio import atomic_path

    try:
        with np.load(path) as kept:
            return {name: kept[name] for name in names}
    except (OSError, KeyError, ValueError):
        pass  # not there yet (or unreadable): compute it
    arrays = compute()
    try:
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, **arrays)
    except OSError as e:  # a read-only home: the run goes on without the cache
        log.warning("%s not cached in %s (%s); set %s to a writable folder, or to '' to turn caching off",
                    path.name, path.parent, e, CACHE_ENV)
    return arrays


def _blas_machine() -> str:
    """What decides numpy's float64 matmul bits here: numpy's version and its BLAS (library, version, CPU
    kernel, threads)."""
    from threadpoolctl import threadpool_info

    blas = [f"{i.get('internal_api')}:{i.get('version')}:{i.get('architecture')}:{i.get('num_threads')}"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    return "|".join([np.__version__, *blas])


@functools.lru_cache(maxsize=1)
def _kid_code() -> str:
    return hashlib.sha256((Path(__file__).parent / "metrics" / "kid.py").read_bytes()).hexdigest()


def kid_reference_sums(x: np.ndarray, groups: int, compute) -> np.ndarray:
    """compute() (KID's within-set kernel sums of the reference features `x` in `groups` groups, ~0.6 s a
    time on Zen 3 at 10,000 digits), read from the cache when it holds the key of x, groups, the KID code
    and this machine's BLAS."""
    folder = cache_dir()
    if folder is None:
        return compute()
    h = hashlib.sha256()
    x = np.ascontiguousarray(x)
    h.update(f"{x.dtype}{x.shape}|{groups}|{_kid_code()}|{_blas_machine()}".encode())
    h.update(x.tobytes())
    return _kept(folder / f"kid-sums-{h.hexdigest()[:32]}.npz", ("sums",), lambda: {"sums": compute()})["sums"]
