"""Does a fast path reach the same quality? Train the default model on the prepared data under given
runtime settings and seeds, then score 10,000 EMA samples with the evaluate stage's metrics.

    dvc repro train_evaluator        # once: data/prepared and models/evaluator.pt
    python bench/bench_quality.py --precision fp32 --compile false --seeds 0 1 2
    python bench/bench_quality.py --precision bf16 --seeds 0 1 2
    python bench/bench_quality.py --quick          # 200 steps, 1 seed: a smoke check of the script
    python bench/bench_quality.py --steps 0 --seeds 0 1 2   # the untrained generator
    python bench/bench_quality.py --at 5000 7500 10000      # one run scored at several budgets
    python bench/bench_quality.py --at 10000 12000 --ema-decays 0.998 0.999 --standing
                                  # also EMAs of other horizons (the same training), and their
                                  # batch-norm statistics recomputed: free comparisons, paired by seed

Prints one line per seed and the mean, so two settings compare against seed-to-seed spread.
Needs no MLflow or DVC at run time (it also runs on a bare GPU machine with torch and scipy).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import yaml
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline import cpu  # noqa: E402
from pipeline.config import load_params, with_override  # noqa: E402
from pipeline.data import load_prepared  # noqa: E402
from pipeline.evaluator import embed, load_evaluator  # noqa: E402
from pipeline.metrics import evaluate_features  # noqa: E402
from pipeline.sampling import generate_images  # noqa: E402
from pipeline.tracking import git_commit  # noqa: E402
from pipeline.runtime import resolve_runtime  # noqa: E402
from pipeline.trainer import Trainer, ema_update  # noqa: E402
from pipeline.visualize import grid, save_png  # noqa: E402

KEYS = ("fid", "classifier_score", "precision", "recall", "coverage")


@torch.no_grad()
def samplers(trainer: Trainer) -> dict[str, torch.nn.Module]:
    """The generator as the pipeline samples it, and variants to compare against (--all-samplers)."""
    out = {"sampler": trainer.sampler, "g_eval": copy.deepcopy(trainer.G).eval(),
           "g_batch_stats": copy.deepcopy(trainer.G).train()}
    if trainer.G_ema is not None:
        out["ema_standing_stats"] = standing_stats(trainer.G_ema, trainer.cfg.z_dim, trainer.rt.device)
    return out


class ExtraEMA:
    """An EMA of G at another decay, updated exactly as the trainer updates its own (weights averaged
    from train.ema_start on, batch-norm buffers copied from the live G), so several horizons are
    compared on one training trajectory."""

    def __init__(self, trainer: Trainer, decay: float):
        self.trainer, self.decay = trainer, decay
        self.net = copy.deepcopy(trainer.G).eval().requires_grad_(False)

    def update(self) -> None:
        t = self.trainer
        ema_update(self.net, t.G, self.decay if t.step >= t.p.train.ema_start else 0.0)


@torch.no_grad()
def standing_stats(net: torch.nn.Module, z_dim: int, device: torch.device, seed: int = 0,
                   batches: int = 20, batch: int = 500) -> torch.nn.Module:
    """A copy of `net` whose batch-norm statistics are its own, averaged over fresh batches, instead of
    the live G's copied ones (which lag or lead an EMA of another horizon)."""
    out = copy.deepcopy(net)
    for m in out.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the recalibration batches
    out.train()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        out(torch.randn(batch, z_dim, generator=gen).to(device))
    return out.eval()


@torch.no_grad()
def d_overfit(trainer: Trainer, x_heldout: np.ndarray, n: int = 1000) -> dict[str, float]:
    """D's view of training digits against held-out ones (ADA's signal): the mean logit and the share
    of positive logits on each. A D that has memorised the training set scores them higher."""
    dev = trainer.rt.device

    def stats(x: torch.Tensor) -> tuple[float, float]:
        logits = torch.cat([trainer.D(x[i:i + 500]).float().flatten() for i in range(0, len(x), 500)])
        return float(logits.mean()), float((logits > 0).float().mean())

    held = torch.from_numpy(x_heldout[:n]).float().div(127.5).sub(1).unsqueeze(1).to(dev)
    train_mean, train_pos = stats(trainer.data[:n])
    held_mean, held_pos = stats(held)
    return {"d_train_logit": train_mean, "d_heldout_logit": held_mean, "d_train_pos": train_pos,
            "d_heldout_pos": held_pos}


def batch_identity(rt) -> dict[str, str]:
    """What a candidate must share with the reference to be compared with it: the machine, the precision
    the runtime resolved to, the code and torch (search results from two batches are not pooled)."""
    return {**cpu.describe(), "device": str(rt.device), "precision": rt.precision, "commit": git_commit(),
            "torch": torch.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, help="default: train.steps from params.yaml; 0: score the "
                    "untrained generator")
    ap.add_argument("--at", type=int, nargs="+", metavar="STEP",
                    help="score at each of these steps of one run (trains to the largest)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--compile", default="auto", choices=["auto", "true", "false"])
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more params overrides")
    ap.add_argument("--all-samplers", action="store_true",
                    help="also score G without EMA and the EMA with recomputed batch-norm statistics")
    ap.add_argument("--ema-decays", type=float, nargs="+", default=[], metavar="DECAY",
                    help="also keep EMAs of G at these decays and score each at every stop")
    ap.add_argument("--standing", action="store_true",
                    help="also score every EMA with its own batch-norm statistics")
    ap.add_argument("--grid", type=Path, help="save a 10x10 grid of the first samples here (PNG)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: train.threads)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    prepared = load_prepared()
    evaluator = load_evaluator()
    real_feats, real_probs = embed(evaluator, prepared.x_ref)
    base = load_params("params.yaml")
    overrides = {"train.precision": args.precision, "train.device": args.device, "train.compile": args.compile}
    overrides.update({k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)})
    if args.quick or args.steps:
        overrides["train.steps"] = 200 if args.quick else args.steps
    if args.at:
        overrides["train.steps"] = max(args.at)
    steps = overrides.get("train.steps", base.train.steps)
    if steps <= base.train.ema_start and "train.ema_start" not in overrides:
        overrides["train.ema_start"] = steps // 2  # a short run: the EMA must start within it
    untrained = args.steps == 0 and not args.quick
    rows, all_rows = [], []
    for seed in args.seeds[:1] if args.quick else args.seeds:
        p = with_override(base, {**overrides, "seed": seed})
        rt = resolve_runtime(p)
        batch = batch_identity(rt)  # the same for every seed
        if rt.device.type == "cpu":
            torch.set_num_threads(args.threads or p.train.threads or os.cpu_count() or 1)
        trainer = Trainer(p, prepared.x_train, prepared.meta["sha256"]["x_train"], rt)
        n_steps = 0 if untrained else p.train.steps
        stops = sorted(set(args.at)) if args.at else [n_steps]
        wall = 0.0
        extra = [ExtraEMA(trainer, d) for d in args.ema_decays]
        for stop in stops:
            t0 = time.perf_counter()
            while trainer.step < stop:
                trainer.train_step()
                for e in extra:
                    e.update()
            if rt.device.type == "cuda":
                torch.cuda.synchronize()
            wall += time.perf_counter() - t0
            final = stop == stops[-1]
            overfit = d_overfit(trainer, prepared.x_test)
            print(f"seed={seed} step={stop} " + " ".join(f"{k}={v:.4g}" for k, v in overfit.items()), flush=True)
            variants = samplers(trainer) if args.all_samplers and final else {"sampler": trainer.sampler}
            for e in extra:
                variants[f"ema={e.decay:g}"] = e.net
            if args.standing:
                for name in [n for n in variants if n.startswith("ema=")] + (["sampler"] if trainer.G_ema else []):
                    variants[f"{name}+standing"] = standing_stats(variants[name], trainer.cfg.z_dim, rt.device)
            for name, net in variants.items():
                images = generate_images(net, p.evaluate.n_samples, p.sample.seed, rt)
                m = evaluate_features(real_feats, real_probs, *embed(evaluator, images), k=p.evaluate.k,
                                      splits=p.evaluate.splits)
                row = {"seed": seed, "step": stop, "variant": name, **{k: m[k] for k in KEYS}, **overfit,
                       "train_s": wall,
                       "images_per_s": trainer.step * p.train.batch_size / max(wall, 1e-9)}
                all_rows.append(row)
                if name == "sampler" and final:
                    rows.append(row)
                    if args.grid:
                        save_png(grid(images[:100], 10), args.grid.with_suffix(f".seed{seed}.png"))
                print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                      flush=True)
            if args.json:  # after every stop: a killed search keeps what it measured
                args.json.write_text(json.dumps({"params": overrides, "batch": batch, "rows": all_rows}, indent=2))
    runtime = dataclasses.asdict(rt) | {"device": str(rt.device)}
    mean = {k: float(np.mean([r[k] for r in rows])) for k in KEYS}
    print(f"runtime {runtime} steps {n_steps}")
    print("mean " + " ".join(f"{k}={v:.4g}" for k, v in mean.items()))
    if args.json:
        args.json.write_text(json.dumps({"params": overrides, "batch": batch, "runtime": runtime, "steps": n_steps,
                                         "rows": all_rows, "mean": mean}, indent=2))


if __name__ == "__main__":
    main()
