"""How much does FID move when one trained generator is sampled again, and why?

    python bench/fid_noise.py --generators g0.pt g1.pt g2.pt               # 10 draws of 10,000, each
    python bench/fid_noise.py --generators g0.pt --draws 10 --n 10000 --latents iid sobol
    python bench/fid_noise.py --generators g0.pt --n 10000 --draws 10 --blocks 4   # each draw the mean
                                            # FID of 4 draws of 10,000 (as evaluate.draws averages them)

Each draw is `--n` images from fresh latents (draw k: sampling seed sample.seed + 1000·(k+1); `--latents
sobol`: a scrambled Sobol sequence through the normal quantile, scrambled by the draw's seed), scored
against the evaluation's real reference (the evaluate stage's reference images) in evaluator A's
features (`--latents antithetic`: z and −z in pairs). Per generator it prints the SD of FID over the draws, its split into the mean term
||mu_g - mu_r||² and the covariance term, the SD of KID (`--kid`), and the cause:

- the delta-method SD (from one draw): FID's first-order noise is the mean of its influence function
  phi(x) = 2 (mu_g - mu_r)·(x - mu_g) + (x - mu_g)ᵀ A (x - mu_g), A = I - Σr^½ (Σr^½ Σg Σr^½)^-½ Σr^½,
  so SD(FID) ≈ SD(phi)/√N: the measured SD, explained by the features' own spread;
- the same SD if the features were Gaussian with the same mean and covariance:
  Var(phi) = 4 Δμᵀ Σg Δμ + 2 Tr((A Σg)²): what a Gaussian model predicts;
- the share of Var(phi) that lies between the evaluator's classes (the class mix of the draw) and within.

`--blocks B` makes each draw's FID the mean over B draws of n, as the evaluate stage averages
`evaluate.draws` of them: the primary metric's noise, measured (it should be the single draw's / √B).
Writes `--json` with every per-draw figure. Needs the evaluate stage's inputs (data/prepared, the
evaluator) and generator files as the train stage writes them (models/generator.pt).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from pipeline import cpu  # noqa: E402
from pipeline.evaluator import embed, load_evaluator  # noqa: E402
from pipeline.metrics import fid, frechet_distance, gaussian_stats  # noqa: E402
from pipeline.sampling import load_generator, to_uint8  # noqa: E402


def reference_images() -> tuple[np.ndarray, str]:
    """The evaluation's real reference: the evaluate stage's own (t10k where the project has it)."""
    from pipeline import data

    if hasattr(data, "load_reference"):
        images, _, meta = data.load_reference(ROOT / data.REFERENCE_DIR)
        return images, meta["source"]
    return data.load_prepared().x_test, "held-out split"


def latents(n: int, z_dim: int, seed: int, kind: str) -> torch.Tensor:
    if kind == "iid":
        return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))
    if kind == "antithetic":  # z and −z: cancels whatever part of the noise is odd in z
        half = torch.randn((n + 1) // 2, z_dim, generator=torch.Generator().manual_seed(seed))
        return torch.cat([half, -half])[:n]
    # scrambled Sobol points, each row a point of [0,1)^z_dim, through the normal quantile
    u = torch.quasirandom.SobolEngine(z_dim, scramble=True, seed=seed).draw(n, dtype=torch.float64)
    return torch.special.ndtri(u.clamp(1e-12, 1 - 1e-12)).float()


@torch.no_grad()
def draw_images(g, z: torch.Tensor, batch: int = 500) -> np.ndarray:
    return np.concatenate([to_uint8(g(z[i:i + batch])) for i in range(0, len(z), batch)])


def split_terms(real_stats, fake_feats) -> dict:
    mu_r, s_r = real_stats
    mu_g, s_g = gaussian_stats(fake_feats)
    total = frechet_distance(mu_g, s_g, mu_r, s_r)
    mean_term = float(np.sum((mu_g - mu_r) ** 2))
    return {"fid": total, "mean_term": mean_term, "cov_term": total - mean_term}


def influence(real_stats, fake_feats, fake_probs) -> dict:
    """FID's first-order noise at this draw: SD(phi)/√N, the Gaussian prediction, the class split."""
    mu_r, s_r = real_stats
    x = np.asarray(fake_feats, np.float64)
    mu_g, s_g = gaussian_stats(x)
    r_half = scipy.linalg.sqrtm(s_r).real
    inner = scipy.linalg.sqrtm(r_half @ s_g @ r_half).real
    a = np.eye(len(mu_r)) - r_half @ np.linalg.inv(inner) @ r_half
    a = (a + a.T) / 2
    dmu = mu_g - mu_r
    xc = x - mu_g
    phi = 2 * xc @ dmu + np.einsum("ij,jk,ik->i", xc, a, xc)
    n = len(x)
    var_gauss = 4 * dmu @ s_g @ dmu + 2 * np.trace(a @ s_g @ a @ s_g)
    cls = fake_probs.argmax(1)
    between = sum((cls == c).mean() * (phi[cls == c].mean() - phi.mean()) ** 2 for c in np.unique(cls))
    return {"sd_delta": float(phi.std(ddof=1) / np.sqrt(n)), "sd_gaussian": float(np.sqrt(var_gauss / n)),
            "between_class_share": float(between / phi.var()),
            "phi_kurtosis": float(((phi - phi.mean()) ** 4).mean() / phi.var() ** 2)}


def kid_of(real_feats, fake_feats) -> float:
    try:
        from pipeline.metrics.kid import kid
    except ImportError:
        return float("nan")
    return kid(real_feats, fake_feats)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generators", type=Path, nargs="+", required=True, help="generator files (train stage's)")
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--n", type=int, default=10000, help="images a draw")
    ap.add_argument("--blocks", type=int, default=1, help="draws of n averaged into one FID (evaluate.draws: the "
                    "primary metric is the mean of 20)")
    ap.add_argument("--kid", action="store_true", help="also KID (an N x N pass a draw)")
    ap.add_argument("--latents", nargs="+", default=["iid"], choices=["iid", "sobol", "antithetic"])
    ap.add_argument("--seed", type=int, default=1234, help="sample.seed: draw k uses seed + 1000·(k+1)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    evaluator = load_evaluator()
    real, ref_name = reference_images()
    real_feats, _ = embed(evaluator, real)
    real_stats = gaussian_stats(real_feats)
    out = {"machine": cpu.describe(), "reference": ref_name, "n_real": len(real), "n": args.n,
           "blocks": args.blocks, "draws": args.draws, "torch": torch.__version__, "generators": {}}
    print(f"reference: {ref_name} ({len(real)} digits); {args.draws} draws of {args.blocks} x {args.n} images; "
          f"{cpu.describe()}")
    for path in args.generators:
        g = load_generator(path)
        # batch norm in eval mode: an image does not depend on its batch (checked, not assumed)
        z = latents(64, g.cfg.z_dim, 0, "iid")
        assert np.array_equal(draw_images(g, z, 64), draw_images(g, z, 8)), "sampling depends on the batch"
        for kind in args.latents:
            rows = []
            t0 = time.perf_counter()
            for k in range(args.draws):
                parts = []
                for b in range(args.blocks):
                    z = latents(args.n, g.cfg.z_dim, args.seed + 1000 * (k * args.blocks + b + 1), kind)
                    f, p = embed(evaluator, draw_images(g, z))
                    part = split_terms(real_stats, f) | influence(real_stats, f, p)
                    part["kid"] = kid_of(real_feats, f) if args.kid else float("nan")
                    part["class_mix"] = np.bincount(p.argmax(1), minlength=10)
                    parts.append(part)
                # a draw of the primary metric: the mean over `blocks` draws of n (evaluate.draws)
                row = {key: float(np.mean([q[key] for q in parts])) for key in parts[0] if key != "class_mix"}
                row["sd_delta"] = float(np.sqrt(np.mean([q["sd_delta"] ** 2 for q in parts]) / args.blocks))
                row["sd_gaussian"] = float(np.sqrt(np.mean([q["sd_gaussian"] ** 2 for q in parts]) / args.blocks))
                row["class_mix"] = np.sum([q["class_mix"] for q in parts], axis=0).tolist()
                rows.append(row)
                print(f"  {path} {kind} draw {k}: FID {row['fid']:.3f} (mean term {row['mean_term']:.3f}, cov term "
                      f"{row['cov_term']:.3f}), KID {row['kid']:.3f}", flush=True)
            col = {key: np.array([r[key] for r in rows]) for key in rows[0] if key != "class_mix"}
            summary = {"fid_mean": col["fid"].mean(), "fid_sd": col["fid"].std(ddof=1),
                       "mean_term_sd": col["mean_term"].std(ddof=1), "cov_term_sd": col["cov_term"].std(ddof=1),
                       "kid_mean": col["kid"].mean(), "kid_sd": col["kid"].std(ddof=1),
                       "sd_delta": col["sd_delta"].mean(), "sd_gaussian": col["sd_gaussian"].mean(),
                       "between_class_share": col["between_class_share"].mean(),
                       "phi_kurtosis": col["phi_kurtosis"].mean(), "seconds": time.perf_counter() - t0}
            summary = {k: float(v) for k, v in summary.items()}
            out["generators"].setdefault(str(path), {})[kind] = {"summary": summary, "draws": rows}
            print(f"{path} [{kind}, {args.blocks} x {args.n}]: FID {summary['fid_mean']:.3f}, SD over {args.draws} "
                  f"draws {summary['fid_sd']:.3f} (mean term {summary['mean_term_sd']:.3f}, cov term "
                  f"{summary['cov_term_sd']:.3f}); delta-method SD {summary['sd_delta']:.3f}, a Gaussian model's "
                  f"{summary['sd_gaussian']:.3f}; {summary['between_class_share']:.0%} of the noise between classes; "
                  f"KID SD {summary['kid_sd']:.3f}; {summary['seconds']:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
