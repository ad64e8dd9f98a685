"""The SAGAN training loop: deterministic (pipeline/draws.py), resumable (the trainer's state_dict, in
files written by pipeline/checkpoint.py), tracked through callbacks, and fast on CPU and GPU
(pipeline/runtime.py)."""
from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from pipeline import augment, checkpoint, fast_attention, losses
from pipeline.checkpoint import params_hash
from pipeline.config import Params
from pipeline.draws import batch_indices, epoch_permutation, fixed_latent, latent, step_generator
from pipeline.errors import UserError
from pipeline.models import Discriminator, Generator, ModelConfig, gammas
from pipeline.optim import Adam
from pipeline.runtime import Runtime
from pipeline.sampling import in_eval_mode, to_uint8
from pipeline.seeding import seed_everything

log = logging.getLogger(__name__)

LECAM_DECAY = 0.99       # the anchors' EMA decay (the LeCam paper's)
ADA_IMAGES = 100_000     # real images over which ADA's probability can move by 1 (~3,100 steps of 32)

class NonFiniteLoss(UserError):
    pass


@dataclass
class TrainResult:
    step: int
    history: dict[str, list[float]]
    final: dict[str, float]
    images_per_s: float
    wall_s: float
    snapshots: np.ndarray        # (T, n, 28, 28) uint8, fixed-latent samples across training
    snapshot_steps: list[int]


@torch.no_grad()
def ema_update(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    """ema's weights <- decay · ema + (1 − decay) · net's; its batch-norm buffers copied from net."""
    # one multi-tensor kernel each instead of one launch per tensor (launch-bound on GPUs)
    torch._foreach_lerp_(list(ema.parameters()), [w.detach() for w in net.parameters()], 1.0 - decay)
    torch._foreach_copy_(list(ema.buffers()), list(net.buffers()))


class Trainer:
    def __init__(self, p: Params, x_train_uint8: np.ndarray, data_sha: str, runtime: Runtime,
                 checkpoint_path: Path | None = None):
        self.p, self.rt = p, runtime
        self.seed = p.seed
        self.cfg = ModelConfig.from_params(p)
        self.checkpoint_path = checkpoint_path
        self.hash = params_hash(p, data_sha)
        seed_everything(p.seed, deterministic=runtime.device.type == "cpu")
        dev = runtime.device
        mf = torch.channels_last
        # the whole training set lives on the device: 60k x 784 floats is 188 MB
        self.data = (torch.from_numpy(x_train_uint8).float().div(127.5).sub(1).unsqueeze(1)
                     .to(dev).contiguous(memory_format=mf))
        if len(self.data) < p.train.batch_size:
            raise UserError(f"train.batch_size = {p.train.batch_size} exceeds the {len(self.data)} training images")
        torch.manual_seed(p.seed)
        self.G = Generator(self.cfg).to(dev, memory_format=mf)
        self.D = Discriminator(self.cfg).to(dev, memory_format=mf)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False) if p.train.ema else None
        if runtime.world_size > 1:
            from pipeline.distributed import convert_sync_batchnorm
            self.G = convert_sync_batchnorm(self.G, dev.type)
        fused = dev.type in ("cuda", "cpu")
        t = p.train
        self.opt_g = Adam(self.G.parameters(), lr=t.lr_g, betas=(t.beta1_g, t.beta2_g), fused=fused)
        self.opt_d = Adam(self.D.parameters(), lr=t.lr_d, betas=(t.beta1_d, t.beta2_d), fused=fused)
        self.G_run, self.D_run = self.G, self.D
        if runtime.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [dev.index] if dev.type == "cuda" else None
            self.G_run = DDP(self.G, device_ids=ids, broadcast_buffers=False)
            self.D_run = DDP(self.D, device_ids=ids, broadcast_buffers=False)
        self.G_fwd, self.D_fwd = self.G_run, self.D.forward
        if runtime.compile:
            mode = runtime.compile_mode
            self.G_fwd = torch.compile(self.G_run, mode=mode)
            self.D_fwd = torch.compile(self.D, mode=mode)
            self.D_run = torch.compile(self.D_run, mode=mode)
            if dev.type == "cpu":  # deterministic: the compiler's flag too, now that it is loaded
                torch.use_deterministic_algorithms(True, warn_only=True)
        self.step = 0
        self.history: dict[str, list[float]] = {k: [] for k in ("d_loss", "g_loss", "d_real", "d_fake")}
        self.snapshots: list[np.ndarray] = []
        self.snapshot_steps: list[int] = []
        self.fixed_z = fixed_latent(p.sample.grid_rows ** 2, self.cfg.z_dim, p.sample.seed).to(dev)
        self.extra_state: dict[str, Any] = {}
        # LeCam's anchors (EMAs of D's mean logit on reals and on fakes) and ADA's probability: device
        # tensors updated in place, so neither costs a host sync
        self.lecam_anchors = torch.zeros(2, device=dev)
        self.augment_p = torch.zeros((), device=dev)
        self._perm: tuple[int, torch.Tensor] | None = None

    # -- one iteration

    def _autocast(self):
        return torch.autocast(self.rt.device.type, dtype=torch.bfloat16, enabled=self.rt.precision == "bf16")

    def _local_slice(self, global_batch: torch.Tensor) -> torch.Tensor:
        """Each rank takes its share of the global batch (the distributed sampler)."""
        if self.rt.world_size == 1:
            return global_batch
        return global_batch.chunk(self.rt.world_size)[self.rt.rank]

    def train_step(self) -> dict[str, float]:
        """d_steps D updates, then one G update. The last D update's fakes are generated with
        gradients and reused for the G update (as in the DCGAN reference loop), which saves a
        generator forward pass per step: G's 28x28 attention is the most expensive op here."""
        p, dev, kind = self.p, self.rt.device, self.p.loss.type
        bs, n_d = p.train.batch_size, p.train.d_steps
        if self.rt.compile and self.rt.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # last step's graph outputs may be reused now
        if p.train.lr_decay != "none":
            self._set_learning_rates()
        self.D.requires_grad_(True)
        for k in range(n_d):
            draw = self.step * n_d + k
            idx = self._local_slice(batch_indices(len(self.data), bs, self.seed, draw, dev,
                                                  self._permutation(draw)))
            real = self.data[idx]
            z = self._local_slice(latent(bs, self.cfg.z_dim, self.seed, draw, device=dev))
            last = k == n_d - 1
            with self._autocast():
                with torch.set_grad_enabled(last):
                    fake = self.G_fwd(z)
                # one D pass over real and fake together (D has no batch norm, so this is exact)
                d_in = self._augment(torch.cat([real, fake.detach().to(real.dtype)]), draw, stream=3, halves=2)
                logits = self.D_run(d_in).float()
                real_l, fake_l = logits[: len(real)], logits[len(real):]
                d_loss = losses.d_loss(kind, real_l, fake_l)
                if p.train.lecam > 0:
                    d_loss = d_loss + p.train.lecam * self._lecam(real_l, fake_l, first=draw == 0)
            if p.train.r1 > 0 and draw % p.train.r1_every == 0:
                d_loss = d_loss + self._r1(d_in[: len(real)])
            if p.train.augment_target > 0:
                self._adapt_augment(real_l)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
        # G step on the same fakes, D frozen: no D weight gradients are computed at all
        self.D.requires_grad_(False)
        with self._autocast():
            g_logits = self.D_fwd(self._augment(fake, self.step, stream=4, halves=1)).float()
            g_loss = losses.g_loss(kind, g_logits)
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        self._update_ema()
        self.step += 1
        out = {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(),
               "d_real": real_l.detach().mean(), "d_fake": fake_l.detach().mean()}
        if p.train.augment_target > 0:
            out["augment_p"] = self.augment_p.clone()
        return out

    def _global_mean(self, x: torch.Tensor) -> torch.Tensor:
        """The mean over the global batch (each rank holds its share)."""
        if self.rt.world_size > 1:
            import torch.distributed as dist
            x = x.clone()
            dist.all_reduce(x)
            x /= self.rt.world_size
        return x

    def _lecam(self, real_l: torch.Tensor, fake_l: torch.Tensor, first: bool) -> torch.Tensor:
        """LeCam regularisation (Tseng et al. 2021): D's logits on reals are pulled towards its recent
        mean on fakes and vice versa, only where they have moved past them. This bounds how far D can
        separate the 4,000 training digits from G's, the overfitting a limited-data D shows."""
        reg = (F.relu(real_l - self.lecam_anchors[1]).pow(2).mean()
               + F.relu(self.lecam_anchors[0] - fake_l).pow(2).mean())
        with torch.no_grad():
            seen = self._global_mean(torch.stack([real_l.mean(), fake_l.mean()]))
            self.lecam_anchors.lerp_(seen, 1.0 if first else 1.0 - LECAM_DECAY)
        return reg

    def _r1(self, real: torch.Tensor) -> torch.Tensor:
        """R1 (Mescheder et al. 2018), lazily (StyleGAN2): γ/2 · E|∇_x D(x)|² on the reals as D saw them,
        every train.r1_every D updates and scaled by it. Penalising D's slope at the training digits
        keeps it from carving a sharp boundary around 4,000 of them. A separate fp32 pass on attention
        that autograd can differentiate twice. Under torchrun it runs on the bare D, each rank on its share
        of the reals: autograd sums its parameter gradients with the DDP pass's before DDP's hooks fire,
        so DDP averages the whole D loss's gradients."""
        x = real.detach().float().requires_grad_(True)
        self.D.eval()  # spectral norm's power iteration has run in this step's D pass: not again
        try:
            with fast_attention.twice_differentiable(), torch.autocast(self.rt.device.type, enabled=False):
                (grad,) = torch.autograd.grad(self.D(x).sum(), x, create_graph=True)
        finally:
            self.D.train()
        return grad.square().sum(dim=(1, 2, 3)).mean() * (self.p.train.r1 / 2 * self.p.train.r1_every)

    @torch.no_grad()
    def _adapt_augment(self, real_l: torch.Tensor) -> None:
        """ADA (Karras et al. 2020): the probability of augmenting an image moves up while more than
        train.augment_target of D's logits on reals are positive (D is sure of the training digits), down
        otherwise, by at most 1 per ADA_IMAGES real images shown."""
        positive = self._global_mean((real_l > 0).float().mean())
        step = self.p.train.batch_size / ADA_IMAGES
        self.augment_p.add_(torch.sign(positive - self.p.train.augment_target) * step).clamp_(0.0, 1.0)

    def _augment(self, x: torch.Tensor, draw: int, stream: int, halves: int) -> torch.Tensor:
        """D's view of a batch of `halves` local batches side by side (train.augment). The random
        parameters are drawn for the global batch and each rank takes its images' rows, so any
        number of processes sees exactly what one process would."""
        policy = self.p.train.augment
        if policy == "none":
            return x
        bs = self.p.train.batch_size
        gen = step_generator(self.seed, draw, stream, self.rt.device)
        params = augment.draw(halves * bs, policy, gen, tuple(x.shape[-2:]), self.rt.device)
        if self.p.train.augment_target > 0:  # each image augmented with probability p (drawn last)
            params["keep"] = torch.rand(halves * bs, generator=gen, device=self.rt.device) >= self.augment_p
        if self.rt.world_size > 1:
            rows = torch.cat([self._local_slice(torch.arange(h * bs, (h + 1) * bs, device=self.rt.device))
                              for h in range(halves)])
            params = augment.select(params, rows)
        return augment.apply(x, params)

    def lr_factor(self, step: int) -> float:
        """The learning rates' multiplier at `step`: a pure function of the step, so a resumed run
        continues the schedule exactly (no scheduler state in the checkpoint)."""
        t = self.p.train
        start = t.lr_decay_from * t.steps
        if t.lr_decay == "none" or step < start:
            return 1.0
        return max(0.0, (t.steps - step) / (t.steps - start))

    def _set_learning_rates(self) -> None:
        f = self.lr_factor(self.step)
        for opt, base in ((self.opt_g, self.p.train.lr_g), (self.opt_d, self.p.train.lr_d)):
            for group in opt.param_groups:
                group["lr"] = base * f

    def _permutation(self, draw: int) -> torch.Tensor:
        """This draw's epoch permutation, computed once per epoch."""
        epoch = draw // (len(self.data) // self.p.train.batch_size)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, epoch_permutation(len(self.data), self.seed, epoch, self.rt.device))
        return self._perm[1]

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.G_ema is not None:
            ema_update(self.G_ema, self.G, self.p.train.ema_decay if self.step >= self.p.train.ema_start else 0.0)

    @property
    def sampler(self) -> Generator:
        """The generator samples come from: the EMA when it is on."""
        return self.G_ema if self.G_ema is not None else self.G

    @torch.no_grad()
    def generate(self, z: torch.Tensor, batch: int = 1000) -> torch.Tensor:
        out = []
        with in_eval_mode(self.sampler) as net:
            for i in range(0, len(z), batch):
                with self._autocast():
                    out.append(net(z[i:i + batch].to(self.rt.device)).float())
        return torch.cat(out)

    # -- state and checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs, as tensors and strings (loads with weights_only=True), with the
        params hash that identifies the training."""
        return {
            "params_hash": self.hash,
            "training_params": json.dumps(checkpoint.training_params(self.p), sort_keys=True),
            "step": self.step,
            "G": self.G.state_dict(), "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict() if self.G_ema is not None else {},
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "history": {k: torch.tensor(v, dtype=torch.float64) for k, v in self.history.items()},
            "snapshots": torch.from_numpy(np.stack(self.snapshots)) if self.snapshots else torch.zeros(0),
            "snapshot_steps": torch.tensor(self.snapshot_steps, dtype=torch.int64),
            "extra": json.dumps(self.extra_state),
            "lecam_anchors": self.lecam_anchors, "augment_p": self.augment_p,
        }

    def load_state_dict(self, st: dict[str, Any]) -> None:
        """Puts the trainer where `state_dict()` was taken (the caller checks it is this training's)."""
        self.G.load_state_dict(st["G"])
        self.D.load_state_dict(st["D"])
        if self.G_ema is not None:
            self.G_ema.load_state_dict(st["G_ema"])
        self.opt_g.load_state_dict(st["opt_g"])
        self.opt_d.load_state_dict(st["opt_d"])
        self.step = int(st["step"])
        self.history = {k: v.tolist() for k, v in st["history"].items()}
        if st["snapshots"].numel():
            self.snapshots = list(st["snapshots"].numpy())
        self.snapshot_steps = st["snapshot_steps"].tolist()
        self.extra_state = json.loads(st.get("extra", "{}"))
        if "lecam_anchors" in st:
            self.lecam_anchors.copy_(st["lecam_anchors"])
            self.augment_p.copy_(st["augment_p"])

    def save_checkpoint(self) -> None:
        if self.checkpoint_path is not None and self.rt.is_main:
            checkpoint.save(self.state_dict(), self.checkpoint_path)

    def load_checkpoint(self, path: Path) -> None:
        self.load_state_dict(checkpoint.load(path, str(self.rt.device), self.p, self.hash))

    def resume(self) -> bool:
        """Loads the checkpoint of these params if one exists (after an interruption)."""
        if self.checkpoint_path is None or not checkpoint.exists(self.checkpoint_path):
            return False
        self.load_checkpoint(self.checkpoint_path)
        log.info("resuming from %s at step %d of %d", self.checkpoint_path, self.step, self.p.train.steps)
        return True

    # -- the run

    def snapshot(self) -> None:
        self.snapshots.append(to_uint8(self.generate(self.fixed_z)))
        self.snapshot_steps.append(self.step)

    def full_eval_steps(self) -> list[int]:
        """The steps of train.full_eval_at (fractions of the budget)."""
        return sorted({max(1, round(f * self.p.train.steps)) for f in self.p.train.full_eval_at})

    def run(self, on_log: Callable[[int, dict[str, float]], None] | None = None,
            on_eval: Callable[["Trainer"], dict[str, float]] | None = None,
            progress: bool = True,
            on_full_eval: Callable[["Trainer"], dict[str, float]] | None = None) -> TrainResult:
        from tqdm import tqdm

        p = self.p.train
        if p.snapshot_every and self.step == 0 and self.rt.is_main:
            self.snapshot()
        bar = tqdm(total=p.steps, initial=self.step, disable=not (progress and self.rt.is_main),
                   desc="train", unit="step", dynamic_ncols=True, mininterval=1.0)
        t0, step0 = time.perf_counter(), self.step
        imgs_per_step = p.batch_size  # images per G+D iteration, as the benchmark counts them
        pending: list[tuple[int, dict[str, torch.Tensor]]] = []
        full_steps = set(self.full_eval_steps())
        while self.step < p.steps:
            out = self.train_step()
            pending.append((self.step, out))
            at_log = self.step % p.log_every == 0 or self.step == p.steps
            at_ckpt = self.step % p.checkpoint_every == 0 or self.step == p.steps
            if at_log or at_ckpt:
                # one host sync per log interval, not per step
                vals = torch.stack([torch.stack(list(o.values())) for _, o in pending]).float().cpu().numpy()
                keys = list(pending[0][1])
                finite = np.isfinite(vals).all(axis=1)
                if not finite.all():
                    bad = pending[int(np.argmin(finite))][0]
                    raise NonFiniteLoss(
                        f"non-finite loss at step {bad}: training stopped; the last good checkpoint "
                        f"({self.checkpoint_path}) is kept. Lower train.lr_d/lr_g or use "
                        f"train.precision=fp32.")
                for row in vals:
                    for k, v in zip(keys, row):
                        self.history.setdefault(k, []).append(float(v))
                elapsed = time.perf_counter() - t0
                rate = (self.step - step0) * imgs_per_step / max(elapsed, 1e-9)
                last = dict(zip(keys, vals[-1].tolist()))
                if self.rt.is_main:
                    bar.set_postfix(d=f"{last['d_loss']:.3f}", g=f"{last['g_loss']:.3f}", img_s=f"{rate:.0f}")
                    if on_log:
                        for s, row in zip([s for s, _ in pending], vals):
                            on_log(s, {**dict(zip(keys, row.tolist()))})
                        on_log(self.step, {"images_per_s": rate, **gammas(self.G, self.D)})
                    if at_log:
                        log.info("step %d/%d d_loss %.4f g_loss %.4f D(x) %.3f D(G(z)) %.3f %.0f img/s",
                                 self.step, p.steps, last["d_loss"], last["g_loss"], last["d_real"],
                                 last["d_fake"], rate)
                pending = []
            if p.snapshot_every and self.step % p.snapshot_every == 0 and self.rt.is_main:
                self.snapshot()
            if on_eval and p.eval_every and (self.step % p.eval_every == 0 or self.step == p.steps) \
                    and self.rt.is_main:
                self.extra_state.setdefault("evals", []).append({"step": self.step, **on_eval(self)})
            if on_full_eval and self.step in full_steps and self.rt.is_main:
                on_full_eval(self)  # the caller logs its values (MLflow, then the run records)
            if at_ckpt:
                self.save_checkpoint()
            bar.update(1)
        bar.close()
        wall = time.perf_counter() - t0
        rate = (self.step - step0) * imgs_per_step / max(wall, 1e-9)
        final = {k: v[-1] for k, v in self.history.items() if v}
        snaps = np.stack(self.snapshots) if self.snapshots else np.zeros((0, 0, 28, 28), np.uint8)
        return TrainResult(self.step, self.history, final, rate, wall, snaps, self.snapshot_steps)
