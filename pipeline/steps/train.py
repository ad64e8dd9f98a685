"""The work of DVC stage `train` (entry point: stages/train.py, whose docstring says what it does)."""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np
import torch

from pipeline.config import Params
from pipeline.data import load_prepared
from pipeline.fileio import atomic_path, write_json
from pipeline.sampling import GENERATOR_FILE, save_generator
from pipeline.models import gammas
from pipeline import checkpoint, cpu, fast_attention, tracking
from pipeline.runtime import resolve_runtime
from pipeline.trainer import NonFiniteLoss, Trainer

log = logging.getLogger("train")

MODEL_FILE = GENERATOR_FILE
SNAPSHOTS_FILE = Path("models/snapshots.npz")
METRICS_FILE = Path("metrics/train.json")
LOSSES_PLOT = Path("plots/train_losses.csv")
FID_PLOT = Path("plots/train_fid.csv")
FULL_EVAL_PLOT = Path("plots/train_full_eval.csv")  # the train.full_eval_at checkpoints' scores
FULL_EVAL_COLUMNS = ("fid", "kid", "classifier_score", "precision", "recall")


def _init_distributed(rt) -> None:
    if rt.world_size > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if rt.device.type == "cuda" else "gloo"
        if rt.device.type == "cuda":
            torch.cuda.set_device(rt.device)
        torch.distributed.init_process_group(backend)


def _write_csv(path: Path, header: list[str], rows) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)


class _Reference:
    """The evaluator and the t10k reference's features, loaded and embedded once, when a hook first asks
    (both hooks score against the same reference: one embedding of 10,000 digits, not two)."""

    def __init__(self, prepared):
        self.prepared, self._evaluator, self._embedded = prepared, None, None

    def evaluator(self):
        from pipeline.evaluator import EVALUATOR_FILE, load_evaluator

        if self._evaluator is None:
            self._evaluator = load_evaluator(EVALUATOR_FILE)
        return self._evaluator

    def features(self):
        """(features, class probabilities) of the reference, as pipeline.evaluator.embed gives them (kept
        across processes by pipeline.memo)."""
        from pipeline.memo import embed_reference

        if self._embedded is None:
            self._embedded = embed_reference(self.evaluator(), self.prepared.x_ref)
        return self._embedded


def _quick_fid_hook(p: Params, reference: _Reference):
    """FID of a small fixed N (train.eval_n) every train.eval_every steps, when the evaluator exists, against
    the whole t10k reference: its Gaussian statistics are computed once, so the reference's size costs
    one embedding at the start and nothing per evaluation."""
    from pipeline.evaluator import EVALUATOR_FILE

    if not p.train.eval_every or not EVALUATOR_FILE.exists():
        return None
    from pipeline.metrics import RealReference, quick_fid
    from pipeline.draws import fixed_latent

    evaluator = reference.evaluator()
    real = RealReference.from_features(reference.features()[0])
    z = fixed_latent(p.train.eval_n, p.model.z_dim, p.sample.seed + 1)

    def hook(trainer: Trainer) -> dict[str, float]:
        images = trainer.generate(z).cpu()
        if not torch.isfinite(images).all():  # the losses are checked in batches; the images now
            raise NonFiniteLoss(f"the generator's images are not finite at step {trainer.step}: training "
                                f"diverged; lower the learning rates or check the params")
        return {"fid_quick": float(quick_fid(evaluator, real, images))}

    return hook


def _full_eval_hook(p: Params, reference: _Reference, rt):
    """Every metric of evaluate.n_samples samples at train.full_eval_at, as the evaluate stage computes
    them (the same latents, evaluator, t10k reference and ordering keys): the curves the report's drift
    test reads."""
    from pipeline.evaluator import EVALUATOR_FILE, embed
    from pipeline.metrics import SCALARS, evaluate_features
    from pipeline.sampling import generate_images, in_eval_mode

    if not p.train.full_eval_at or not EVALUATOR_FILE.exists():
        return None
    evaluator = reference.evaluator()
    real_f, real_p = reference.features()
    prepared = reference.prepared

    def hook(trainer: Trainer) -> dict[str, float]:
        with in_eval_mode(trainer.sampler) as net:
            images = generate_images(net, p.evaluate.n_samples, p.sample.seed, rt)
        fake_f, fake_p = embed(evaluator, images)
        m = evaluate_features(real_f, real_p, fake_f, fake_p, p.evaluate.k, p.evaluate.splits,
                              real_keys=prepared.x_ref, fake_keys=images)
        return {f"full.{k}": float(m[k]) for k in SCALARS}

    return hook


def main(p: Params) -> None:
    if p.train.device == "cpu" or not torch.cuda.is_available():
        # before resolve_runtime: the attention path is chosen for this thread count
        torch.set_num_threads(p.train.threads or os.cpu_count() or 1)
    rt = resolve_runtime(p)
    _init_distributed(rt)
    prepared = load_prepared()
    data_sha = prepared.meta["sha256"]["x_train"]
    ckpt_dir = tracking.project_root() / "checkpoints"
    trainer = Trainer(p, prepared.x_train, data_sha, rt)
    trainer.checkpoint_path = ckpt_dir / f"{trainer.hash}.pt"
    log.info("device %s, precision %s, compile %s, attention kernel %s, world size %d, checkpoint %s",
             rt.device, rt.precision, rt.compile, rt.attention_kernel, rt.world_size, trainer.checkpoint_path)

    logger = None
    resumed = trainer.resume()
    if rt.is_main:
        previous = trainer.extra_state.get("run_id") if resumed else None
        tags = {"data.source": prepared.meta["source"], "data.sha256": data_sha,
                "runtime.device": str(rt.device), "runtime.precision": rt.precision,
                "runtime.compile": rt.compile, "runtime.compile_mode": str(rt.compile_mode),
                "runtime.world_size": rt.world_size, "runtime.attention_kernel": rt.attention_kernel,
                "runtime.attention_paths": rt.attention_paths, "runtime.threads": torch.get_num_threads(),
                **tracking.machine_tags(str(rt.device))}
        if previous:
            run_id = tracking.reopen_run(previous, p)
        else:
            run_id = tracking.start_run(p, tags=tags)
            tracking.log_dataset(run_id, prepared.x_train, prepared.y_train, prepared.meta)
        trainer.extra_state["run_id"] = run_id
        # the run's journal (tracking.new_journal): kept with each checkpoint, so a resumed run's is whole
        journal = (trainer.extra_state.get("journal") if previous else None) or tracking.read_journal(run_id)
        logger = tracking.RunLogger(run_id, journal)
        trainer.extra_state["journal"] = logger.journal
        log.info("MLflow run %s in %s", run_id, tracking.tracking_uri())

    def on_eval(t: Trainer) -> dict[str, float]:
        vals = fid_hook(t)
        logger.metrics(vals, step=t.step)
        log.info("step %d quick FID (N=%d) %.3f", t.step, p.train.eval_n, vals["fid_quick"])
        return vals

    try:
        reference = _Reference(prepared)
        fid_hook = _quick_fid_hook(p, reference) if rt.is_main else None
        full_hook = _full_eval_hook(p, reference, rt) if rt.is_main else None

        def on_full_eval(t: Trainer) -> dict[str, float]:
            vals = full_hook(t)
            logger.metrics(vals, step=t.step)
            # kept with the checkpoint, so a resumed run's plot has every evaluation
            t.extra_state.setdefault("full_evals", []).append({"step": t.step, **vals})
            log.info("step %d: FID %.3f, KID %.3f ± %.3f, classifier score %.3f, precision %.3f, recall %.3f "
                     "(N=%d)", t.step, vals["full.fid"], vals["full.kid"], vals["full.kid_se"],
                     vals["full.classifier_score"], vals["full.precision"], vals["full.recall"], p.evaluate.n_samples)
            return vals

        result = trainer.run(on_log=(lambda step, vals: logger.metrics(vals, step=step)) if logger else None,
                             on_eval=on_eval if fid_hook else None,
                             on_full_eval=on_full_eval if full_hook else None)
        if not rt.is_main:
            torch.distributed.barrier()
            return
        _write_outputs(trainer, result, rt, logger)
    except KeyboardInterrupt:
        if logger:
            logger.close("KILLED")
        raise
    except BaseException:
        # any failure, also after training (saving, metrics, artifact upload): the run must not stay RUNNING
        if logger:
            logger.close("FAILED")
        raise
    logger.close("FINISHED")
    tracking.save_journal(logger.run_id, logger.journal)  # for evaluate, which writes the run's record from it
    checkpoint.remove(trainer.checkpoint_path)  # the finished weights are the output now
    if rt.world_size > 1:
        torch.distributed.barrier()
    log.info("done: %d steps in %.0f s (%.0f img/s); weights in %s", result.step, result.wall_s,
             result.images_per_s, MODEL_FILE)


def _write_outputs(trainer: Trainer, result, rt, logger: tracking.RunLogger) -> None:
    """The stage's DVC outputs (weights, snapshots, metrics, plots), then their MLflow copies."""
    save_generator(MODEL_FILE, trainer.G, trainer.G_ema, result.step)
    with atomic_path(SNAPSHOTS_FILE, suffix=".npz") as tmp:
        np.savez_compressed(tmp, images=result.snapshots, steps=np.array(result.snapshot_steps))
    hist = result.history
    _write_csv(LOSSES_PLOT, ["step", "d_loss", "g_loss", "d_real", "d_fake"],
               ([i + 1, *(round(hist[k][i], 6) for k in ("d_loss", "g_loss", "d_real", "d_fake"))]
                for i in range(len(hist["d_loss"]))))
    evals = trainer.extra_state.get("evals", [])
    _write_csv(FID_PLOT, ["step", "fid_quick"], ([e["step"], round(e["fid_quick"], 4)] for e in evals))
    _write_csv(FULL_EVAL_PLOT, ["step", *FULL_EVAL_COLUMNS],
               ([e["step"], *(round(e[f"full.{k}"], 4) for k in FULL_EVAL_COLUMNS)]
                for e in trainer.extra_state.get("full_evals", [])))
    metrics = {
        **{k: round(v, 6) for k, v in result.final.items()},
        **{k: round(v, 6) for k, v in gammas(trainer.G, trainer.D).items()},
        "images_per_s": round(result.images_per_s, 1), "wall_s": round(result.wall_s, 1),
        "steps": result.step,
        "fid_quick": round(evals[-1]["fid_quick"], 4) if evals else None,
        "runtime": {"device": str(rt.device), "precision": rt.precision, "compile": rt.compile,
                    "compile_mode": rt.compile_mode, "world_size": rt.world_size,
                    "attention_kernel": rt.attention_kernel, "attention_paths": rt.attention_paths,
                    "attention_kernel_target": fast_attention.target() if rt.attention_kernel != "sdpa" else None,
                    # where the bits were made: fp32 CPU runs repeat exactly at one thread count on one
                    # CPU class (tests/test_threads.py), so both belong beside the metrics
                    "threads": torch.get_num_threads(), "cpu_class": cpu.effective_class(),
                    "cpu_uarch": cpu.microarchitecture()},
    }
    write_json(METRICS_FILE, metrics)
    logger.metrics({"final.images_per_s": result.images_per_s, "final.wall_s": result.wall_s}, step=result.step)
    logger.artifact(MODEL_FILE, "model")
    # what the samples come from (the EMA where there is one), loadable with mlflow.pytorch.load_state_dict
    logger.state_dict(trainer.sampler.state_dict(), "generator_state_dict")
    _log_model(trainer, logger)
    logger.artifact(METRICS_FILE, "metrics")
    logger.artifact(LOSSES_PLOT, "plots")
    logger.artifact(FULL_EVAL_PLOT, "plots")

def _log_model(trainer: Trainer, logger: tracking.RunLogger) -> None:
    """The generator as the run's MLflow model `generator` (pipeline/generator_model.py), registered when
    mlflow.register_model names a model. It needs the tracking server: while it is away the run keeps
    the state dict and models/generator.pt, without a logged model."""
    import time

    from pipeline import generator_model

    if not trainer.p.mlflow.log_model:
        return
    if logger.offline:
        log.warning("MLflow server away: this run gets no logged model (its state dict is kept and sent later)")
        return
    t0 = time.perf_counter()
    name = trainer.p.mlflow.register_model
    info = generator_model.log_generator(logger.run_id, trainer.sampler, register_as=name)
    log.info("MLflow model %s (%s)%s in %.1f s", info.model_uri, f"runs:/{logger.run_id}/{generator_model.NAME}",
             f", registered as {name!r} version {info.registered_model_version}" if name else "",
             time.perf_counter() - t0)
