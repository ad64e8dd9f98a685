"""A second sampling seed for a grid's finished generators: how much of a cell's spread is sampling noise.

    python -m pipeline.resample --grid default [--sample-seed 1235] [--seeds 3 4]

For each finished run of the grid whose local-runner folder (.grid/<grid>/<cell>-s<seed>/) still holds
its generator, evaluator and prepared data: the same number of images drawn from another latent seed,
on the device and in the precision the run used, evaluated exactly as the evaluate stage does (same
evaluator, same real images). The metrics go to the same MLflow run as `resample.<metric>` (tag
`resample.sample_seed`) and into its run record in results/<grid>/. The report's "Which variance is
it?" section then sets the training-seed spread of a cell against the sampling spread of one generator,
and the equivalence margins against both. A run that already has them is skipped (`--force` redoes it).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("resample")

GRID_DIR = Path(".grid")  # the local runner's run folders (pipeline.grid)
DEFAULT_SEED_OFFSET = 1  # default second seed: the run's sample.seed + 1


def run_folders(grid: str, root: Path) -> list[tuple[Path, str]]:
    """(folder, MLflow run id) of each local-runner run of `grid` whose train stage wrote its run id."""
    out = []
    for folder in sorted((root / GRID_DIR / grid).glob("*")):
        run_json = folder / "models" / "run.json"
        if run_json.exists():
            out.append((folder, json.loads(run_json.read_text())["run_id"]))
    return out


def resample_folder(folder: Path, run, sample_seed: int | None) -> dict[str, float]:
    """The metrics of a second draw of images from the generator in `folder` (the run's own params,
    device and precision; the evaluator its evaluate stage used)."""
    import torch

    from pipeline.config import load_params, with_override
    from pipeline.data import load_prepared
    from pipeline.errors import UserError
    from pipeline.evaluator import embed, load_evaluator, weights_sha256
    from pipeline.metrics import SCALARS, evaluate_features
    from pipeline.runtime import resolve_runtime
    from pipeline.sampling import generate_images, load_generator

    p = load_params(folder / "params.yaml")
    tags = run.data.tags
    device = "cuda" if tags.get("runtime.device", "cpu").startswith("cuda") else "cpu"
    p = with_override(p, {"train.device": device, "train.precision": tags.get("runtime.precision", "fp32")})
    rt = resolve_runtime(p)
    evaluator_file = folder / "models" / "evaluator.pt"
    if weights_sha256(evaluator_file) != tags.get("evaluator.sha256"):
        raise UserError(f"{evaluator_file} is not the evaluator run {run.info.run_id} was judged by")
    seed = p.sample.seed + DEFAULT_SEED_OFFSET if sample_seed is None else sample_seed
    if seed == p.sample.seed:
        raise UserError(f"--sample-seed {seed} is the run's own sample.seed: give another")
    torch.manual_seed(0)
    images = generate_images(load_generator(folder / "models" / "generator.pt", rt.device), p.sample.n, seed, rt)
    images = images[:p.evaluate.n_samples]
    data = load_prepared(folder / "data" / "prepared")
    evaluator = load_evaluator(evaluator_file)
    real_f, real_p = embed(evaluator, data.x_ref)  # the reference its evaluate stage used (load_prepared)
    fake_f, fake_p = embed(evaluator, images)
    m = evaluate_features(real_f, real_p, fake_f, fake_p, p.evaluate.k, p.evaluate.splits,
                          real_keys=data.x_ref, fake_keys=images)
    return {"sample_seed": seed, **{k: float(m[k]) for k in SCALARS}}


def resample_grid(grid: str, root: Path, sample_seed: int | None = None, seeds: list[int] | None = None,
                  force: bool = False) -> int:
    """Resamples every finished, not yet resampled run of `grid` that has its folder; returns how many."""
    import mlflow
    from mlflow.entities import Metric, RunTag
    from tqdm import tqdm

    from pipeline import tracking
    from pipeline.records.export import is_finished_grid_run, save_run_record

    client = mlflow.MlflowClient(tracking.tracking_uri())
    todo = []
    for folder, run_id in run_folders(grid, root):
        try:
            run = client.get_run(run_id)
        except Exception:  # noqa: BLE001 - a folder whose run is in another store
            log.warning("%s: run %s is not in the store %s; skipped", folder.name, run_id, tracking.tracking_uri())
            continue
        if not is_finished_grid_run(run) or run.data.tags.get("grid.name") != grid:
            continue
        if seeds is not None and int(run.data.tags["grid.seed"]) not in seeds:
            continue
        if "resample.fid" in run.data.metrics and not force:
            continue
        todo.append((folder, run))
    log.info("grid %r: %d finished run(s) to resample", grid, len(todo))
    for folder, run in tqdm(todo, desc=f"resample {grid}", unit="run"):
        t0 = time.perf_counter()
        m = resample_folder(folder, run, sample_seed)
        seed = int(m.pop("sample_seed"))
        # straight to the store (not tracking.run_logger, which marks a run FAILED on an error): a
        # resample that fails leaves the finished run as it was
        now = int(time.time() * 1000)
        client.log_batch(run.info.run_id, metrics=[Metric(f"resample.{k}", v, now, 0) for k, v in m.items()],
                         tags=[RunTag("resample.sample_seed", str(seed))])
        save_run_record(run.info.run_id, root, folder / "samples")  # its images: the run's own
        log.info("%s: FID %.3f with sample seed %d (first draw %.3f) in %.0f s", folder.name, m["fid"], seed,
                 run.data.metrics["fid"], time.perf_counter() - t0)
    return len(todo)


def main(argv: list[str] | None = None) -> int:
    from pipeline.errors import USER_ERRORS

    logging.basicConfig(level=logging.INFO, format="%(asctime)s resample: %(message)s", datefmt="%H:%M:%S")
    ap = argparse.ArgumentParser(prog="python -m pipeline.resample", description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", help="grid name (default: params ablation.name)")
    ap.add_argument("--sample-seed", type=int, help="the second latent seed (default: each run's sample.seed + 1)")
    ap.add_argument("--seeds", type=int, nargs="+", help="only these training seeds")
    ap.add_argument("--force", action="store_true", help="resample runs that already have resample.* metrics")
    args = ap.parse_args(argv)
    try:
        from pipeline import tracking
        from pipeline.config import load_params

        grid = args.grid or load_params().ablation.name
        n = resample_grid(grid, tracking.project_root(), args.sample_seed, args.seeds, args.force)
        print(f"{n} run(s) of grid {grid!r} resampled")
    except USER_ERRORS as e:
        print(f"error (resample): {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
