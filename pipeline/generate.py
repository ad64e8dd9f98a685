"""Draw digits from a logged generator, by its MLflow model URI, without opening the code:

    python -m pipeline.generate --model best -n 64 -o digits.png      # the finished run of lowest FID
    python -m pipeline.generate --model runs:/<run id>/generator -n 64 -o digits.png
    python -m pipeline.generate --model models:/sagan-generator/1 -n 16 --seed 7 -o digits.png --npy digits.npy

The latents are the project's fixed latents of `--seed` (the sample stage draws from seed 1234), so one
URI and seed give the same digits every time. The tracking store is $MLFLOW_TRACKING_URI, else the
project's mlflow.db.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("generate")


def best_model_uri(experiment: str) -> str:
    """runs:/<id>/generator of the experiment's finished run of lowest FID that has a logged generator."""
    import mlflow

    from pipeline.tracking import logged_model_id

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise LookupError(f"no MLflow experiment {experiment!r} in {mlflow.get_tracking_uri()}: run `dvc repro` first")
    for run in client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED' and metrics.fid > 0",
                                  order_by=["metrics.fid ASC"], max_results=50):
        if logged_model_id(run.info.run_id, "generator", client):
            return f"runs:/{run.info.run_id}/generator"
    raise LookupError(f"no finished run of {experiment!r} has a logged generator (runs trained before the "
                      f"logged model existed have only their state dict): run `dvc repro`")


def generate(model_uri: str, n: int, seed: int) -> np.ndarray:
    """n uint8 images (n, 28, 28) from the model at `model_uri`, from the fixed latents of `seed`."""
    from pipeline.draws import fixed_latent
    from pipeline.generator_model import load

    model = load(model_uri)
    z_dim = _z_dim(model)
    with torch.no_grad():
        images = model(fixed_latent(n, z_dim, seed))
    return (images[:, 0] * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def _z_dim(model: torch.nn.Module) -> int:
    """The latent size, from the first layer's weight (the exported graph keeps the parameters' names)."""
    for name, param in model.state_dict().items():
        if name.endswith(("fc.weight", "fc.weight_orig", "fc.parametrizations.weight.original")):
            return param.shape[1]
    raise ValueError("cannot tell the latent size of this model: is it a generator logged by this project?")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.generate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="`best` (the experiment's finished run of lowest FID), "
                    "runs:/<run id>/generator, models:/<name>/<version> or models:/<model id>")
    ap.add_argument("--experiment", default="sagan-mnist", help="the experiment `best` searches (default sagan-mnist)")
    ap.add_argument("-n", type=int, default=64, help="how many digits (default 64)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the latents (default 0)")
    ap.add_argument("-o", "--output", type=Path, default=Path("digits.png"), help="a PNG grid of the digits")
    ap.add_argument("--npy", type=Path, help="also the images as a uint8 array (n, 28, 28)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s generate: %(message)s", datefmt="%H:%M:%S")
    if args.n < 1:
        ap.error(f"-n must be at least 1, got {args.n}")

    import mlflow
    from mlflow.exceptions import MlflowException

    from pipeline import tracking
    from pipeline.visualize import grid, save_png

    mlflow.set_tracking_uri(tracking.tracking_uri())
    try:
        if args.model == "best":
            args.model = best_model_uri(args.experiment)
        images = generate(args.model, args.n, args.seed)
    except LookupError as e:
        print(f"generate: {e}", file=sys.stderr)
        return 2
    except (MlflowException, OSError) as e:
        print(f"generate: cannot load {args.model} from {tracking.tracking_uri()}: {str(e).splitlines()[0]}\n"
              f"A run's generator is runs:/<run id>/generator (the run ids: `mlflow runs list --experiment-id 1`, or "
              f"the MLflow UI); set MLFLOW_TRACKING_URI for another store.", file=sys.stderr)
        return 2
    save_png(grid(images, rows=math.ceil(math.sqrt(len(images)))), args.output)
    if args.npy:
        np.save(args.npy, images)
    log.info("%d digits from %s (latents of seed %d) in %s", len(images), args.model, args.seed, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
