"""The trained generator as an MLflow model (`runs:/<run id>/generator`): what a user loads, serves and
registers without this project's code.

It is saved in PyTorch's exported-program format (`pt2`, torch.export): a graph of PyTorch's own
operators and the weights, no pickle of project classes, so `mlflow.pytorch.load_model` works in any
environment with torch. The exported graph runs attention through PyTorch's SDPA (the project's C++
kernel is not in it): its images equal `load_generator(models/generator.pt)` with
`train.attention_kernel: sdpa` bit for bit, and the kernel's to ~1e-7 (6e-8 measured on a tiny run).

    z (float32, (-1, z_dim)) -> images (float32, (-1, 1, 28, 28), in [0, 1])

The same model through pyfunc: `mlflow.pyfunc.load_model(uri).predict(z)` and
`mlflow models predict -m <uri> -i z.json --env-manager local`. `python -m pipeline.generate` draws
images from a seed count.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pipeline import fast_attention

NAME = "generator"  # the logged model's name: runs:/<run id>/generator


class ImagesFromLatents(torch.nn.Module):
    """The generator as a user calls it: latents -> images in [0, 1] (the generator's tanh range mapped)."""

    def __init__(self, generator: torch.nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (self.generator(z).float().clamp(-1, 1) + 1) / 2


def signature(z_dim: int):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    # unnamed tensors: pyfunc then passes a plain array (a named one arrives as a dict, which the
    # PyTorch flavor refuses)
    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, z_dim))]),
                          outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, 28, 28))]))


def pip_requirements() -> list[str]:
    """What loading needs, pinned as this environment has it (torch without its local build label)."""
    import mlflow

    return [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}", f"mlflow=={mlflow.__version__}"]


def exportable(generator: torch.nn.Module) -> ImagesFromLatents:
    """A float32 copy of the generator on the CPU in eval mode, wrapped to take z and give [0, 1] images."""
    import copy

    g = copy.deepcopy(generator).float().cpu().eval()
    return ImagesFromLatents(g).eval()


def log_generator(run_id: str, generator: torch.nn.Module, register_as: str = "") -> Any:
    """Logs `generator` (the EMA generator where the run kept one) as the run's MLflow model `generator`
    (MLflow gives it the run's params) and, when `register_as` is set, registers it under that name (a new
    version). Returns MLflow's ModelInfo (`.model_id`, `.model_uri`)."""
    import mlflow
    import mlflow.pytorch

    # MLflow files a logged model under the process's current experiment, not its run's: point it there
    mlflow.set_experiment(experiment_id=mlflow.MlflowClient().get_run(run_id).info.experiment_id)

    model = exportable(generator)
    z_dim = generator.cfg.z_dim
    example = np.random.default_rng(0).standard_normal((2, z_dim)).astype(np.float32)
    old = fast_attention.mode()
    fast_attention.set_mode("sdpa")  # the exported graph holds PyTorch's operators only
    try:
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            info = mlflow.pytorch.log_model(
                model, name=NAME, run_id=run_id, signature=signature(z_dim), input_example=example,
                serialization_format="pt2", pip_requirements=pip_requirements(),
                registered_model_name=register_as or None)
    finally:
        fast_attention.set_mode(old)
    return info


def load(uri: str) -> torch.nn.Module:
    """The logged generator (z -> [0, 1] images) from a model URI: runs:/<id>/generator, models:/<name>/<version>,
    models:/<model id>."""
    import mlflow.pytorch

    return mlflow.pytorch.load_model(uri)
