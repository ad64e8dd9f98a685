"""What a grid is: its cells (axis values x seed), the params of each, and the threads each worker gets."""
from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import dataclass

from pipeline.config import Params, cell_label


@dataclass(frozen=True)
class Cell:
    values: tuple[tuple[str, object], ...]
    seed: int

    @property
    def label(self) -> str:
        return cell_label([k for k, _ in self.values], dict(self.values))

    @property
    def exp_name(self) -> str:
        slug = "-".join(str(v) for _, v in self.values)
        return re.sub(r"[^A-Za-z0-9_-]+", "_", f"{slug}-s{self.seed}")


@dataclass(frozen=True)
class GridSpec:
    name: str
    axes: dict[str, list]
    seeds: list[int]
    steps: int
    n_samples: int
    jobs: int
    device: str = ""  # train.device for every run ("": as params.yaml says)
    ema_start: int = 0  # train.ema_start of params.yaml: a budget below it moves it (a smoke grid)
    eval_n: int = 0  # train.eval_n of params.yaml: a quick FID never draws more images than the final one
    draws: int = 1  # evaluate.draws (params.yaml's, or --draws): each run samples draws x n_samples images
    log_model: bool = True  # mlflow.log_model (params.yaml's, or --no-log-model): each run's generator as an MLflow model

    @classmethod
    def from_params(cls, p: Params, **over) -> "GridSpec":
        a = p.ablation
        spec = dict(name=a.name, axes=a.axes, seeds=list(a.seeds), steps=a.steps, n_samples=a.n_samples,
                    jobs=a.jobs, ema_start=p.train.ema_start, eval_n=p.train.eval_n,
                    draws=p.evaluate.draws, log_model=p.mlflow.log_model)
        spec.update({k: v for k, v in over.items() if v is not None})
        return cls(**spec)

    def cells(self) -> list[Cell]:
        """Seed by seed: contrasts pair the runs of one seed, so a grid stopped half-way (or spread over
        sessions and machines) leaves whole seeds, each run on one machine."""
        keys = list(self.axes)
        return [Cell(tuple(zip(keys, combo)), seed)
                for seed in self.seeds for combo in itertools.product(*(self.axes[k] for k in keys))]

    def overrides(self, cell: Cell, threads: int = 0) -> dict[str, object]:
        """The params of one cell x seed: the grid's budget and tag, then the cell's axis values, which win
        over the budget where an axis turns one of its keys (a budget axis: `train.steps: [5000, 10000]`),
        then what follows from the cell's own budget; the grid's own ablation block (ablation_block); the seed; the
        CPU threads of each worker (0:
        train.threads as it is). Axes on keys the grid must own (the seed, ...) are refused by params
        validation."""
        over: dict[str, object] = {"train.steps": self.steps, "sample.n": self.n_samples * self.draws,
                                   "evaluate.n_samples": self.n_samples, "evaluate.draws": self.draws,
                                   "mlflow.grid": self.name, "mlflow.log_model": self.log_model,
                                   # a grid's runs are compared, not published one by one: none is registered
                                   "mlflow.register_model": "",
                                   **self.ablation_block()}
        if self.device:
            over["train.device"] = self.device
        axes = dict(cell.values)
        over.update(axes)
        steps, n = int(over["train.steps"]), int(over["sample.n"])
        if "train.eval_every" not in axes:
            over["train.eval_every"] = max(steps // 5, 1)
        if "evaluate.n_samples" not in axes:
            over["evaluate.n_samples"] = min(self.n_samples, n // self.draws)
        if "train.ema_start" not in axes and self.ema_start >= steps:
            over["train.ema_start"] = steps // 2  # a budget below the EMA's start (smoke grids): start it halfway
        if "train.eval_n" not in axes and self.eval_n > int(over["evaluate.n_samples"]):
            over["train.eval_n"] = over["evaluate.n_samples"]  # a smoke grid's few samples: quick FIDs no larger
        over["seed"] = cell.seed
        return {**over, "train.threads": threads} if threads else over

    def ablation_block(self) -> dict[str, object]:
        """The grid's own `ablation.*` keys, which every run's params carry (and so its record: the report reads
        the margins and budget a grid's runs started with from them); the rest of the block (axes, margins,
        replicate_with) is params.yaml's, as the grid read it."""
        return {"ablation.name": self.name, "ablation.steps": self.steps, "ablation.seeds": list(self.seeds),
                "ablation.n_samples": self.n_samples, "ablation.jobs": self.jobs}

    def run_name(self, cell: Cell) -> str:
        return f"{self.name}-{cell.exp_name}"


def threads_per_worker(p: Params, jobs: int) -> int:
    """CPU threads for each of `jobs` parallel workers: the cores shared out when train.threads is 0
    (all cores), since jobs x all-cores OpenMP pools spin against each other (measured: a training
    fell from 900 to 380 img/s beside another); train.threads as set otherwise."""
    if p.train.threads:
        return p.train.threads
    return max(1, (os.cpu_count() or 1) // jobs)


def yaml_value(v: object) -> str:
    """A value as `dvc exp run -S key=VALUE` parses it."""
    return json.dumps(v) if isinstance(v, (list, dict, bool)) or v is None else str(v)
