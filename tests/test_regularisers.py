"""D's regularisers for 4,000 digits: LeCam (train.lecam), adaptive augmentation (train.augment_target) and
the R1 gradient penalty (train.r1).
What each computes, that a resumed run continues them exactly, and that they are off by default."""
import copy
import sys
from pathlib import Path

import torch

from pipeline import augment, fast_attention

sys.path.insert(0, str(Path(__file__).parent))
from train_driver import make_trainer  # noqa: E402

REGULARISED = {"train.lecam": 0.3, "train.augment": "translation", "train.augment_target": 0.6,
               "train.lr_decay": "none"}


def test_lecam_pulls_only_logits_past_the_other_sides_anchor():
    t = make_trainer(None, **{"train.lecam": 0.3})
    t.lecam_anchors.copy_(torch.tensor([1.0, -1.0]))          # recent means: reals 1, fakes -1
    real, fake = torch.tensor([2.0, -3.0]), torch.tensor([0.5, -2.0])
    reg = t._lecam(real, fake, first=False)
    # reals above the fakes' anchor (-1): 2 by 3; fakes below the reals' anchor (1): 0.5 by 0.5, -2 by 3
    assert torch.isclose(reg, torch.tensor((3.0 ** 2 + 0) / 2 + (0.5 ** 2 + 3.0 ** 2) / 2))
    # the anchors move 1% towards this batch's means (-0.5, -0.75)
    torch.testing.assert_close(t.lecam_anchors, torch.tensor([0.99 * 1 + 0.01 * -0.5, 0.99 * -1 + 0.01 * -0.75]))


def test_adaptive_augmentation_rises_while_d_is_sure_of_the_reals_and_stays_in_0_1():
    t = make_trainer(None, **REGULARISED)
    sure, unsure = torch.full((16,), 3.0), torch.full((16,), -3.0)
    for _ in range(10):
        t._adapt_augment(sure)
    assert torch.isclose(t.augment_p, torch.tensor(10 * 16 / 100_000))
    for _ in range(20):
        t._adapt_augment(unsure)
    assert t.augment_p == 0


def test_images_not_drawn_for_augmenting_pass_unchanged():
    x = torch.randn(4, 1, 28, 28)
    params = augment.draw(4, "translation_cutout", torch.Generator().manual_seed(0))
    params["keep"] = torch.tensor([True, False, True, False])
    y = augment.apply(x, params)
    assert torch.equal(y[0], x[0]) and torch.equal(y[2], x[2])
    assert torch.equal(y[1], augment.apply(x[1:2], augment.select({k: v for k, v in params.items() if k != "keep"},
                                                                      slice(1, 2)))[0])


def test_a_resumed_run_continues_the_anchors_and_the_probability_exactly():
    a = make_trainer(None, **REGULARISED)
    for _ in range(3):
        a.train_step()
    state = copy.deepcopy(a.state_dict())
    for _ in range(3):
        a.train_step()
    b = make_trainer(None, **REGULARISED)
    b.load_state_dict(state)
    for _ in range(3):
        b.train_step()
    assert a.augment_p > 0  # random digits: D is soon sure of them
    for name in ("lecam_anchors", "augment_p"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for k, v in a.G.state_dict().items():
        assert torch.equal(v, b.G.state_dict()[k]), k


def test_off_by_default_no_anchor_or_probability_moves():
    t = make_trainer(None, **{"train.augment": "none"})
    out = t.train_step()
    assert "augment_p" not in out
    assert torch.equal(t.lecam_anchors, torch.zeros(2)) and t.augment_p == 0


def test_r1_is_half_gamma_times_the_squared_input_gradient_and_its_parameter_gradient_is_right():
    t = make_trainer(None, **{"train.r1": 2.0, "train.r1_every": 4})
    x = t.data[:3]
    pen = t._r1(x)
    # the first-order gradient on the fast path (the kernel, where built) gives the same value
    xg = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(t.D.eval()(xg).sum(), xg)   # eval: spectral norm's vectors stay as they are
    t.D.train()
    torch.testing.assert_close(pen, g.square().sum(dim=(1, 2, 3)).mean() * (2.0 / 2 * 4), rtol=1e-4, atol=1e-6)
    # the double backward: the penalty's slope along a direction in D's weights, against finite differences
    w = t.D.fc.parametrizations.weight.original if hasattr(t.D.fc, "parametrizations") else t.D.fc.weight
    (dw,) = torch.autograd.grad(pen, w)
    direction = torch.randn_like(w, generator=torch.Generator().manual_seed(0))
    direction *= w.norm() / direction.norm()
    eps = 1e-3   # a 0.1% move of the weights: the penalty is close to linear there
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            w.add_(sign * eps * direction)
        values.append(t._r1(x).detach())
        with torch.no_grad():
            w.sub_(sign * eps * direction)
    numeric = (values[0] - values[1]) / (2 * eps)
    torch.testing.assert_close((dw * direction).sum(), numeric, rtol=2e-2, atol=1e-4)
    assert fast_attention.mode() == "auto"  # the twice-differentiable path is restored afterwards


def test_r1_is_lazy_it_changes_d_only_on_every_nth_update():
    base = make_trainer(None, **{"train.r1": 0.0})
    state = copy.deepcopy(base.state_dict())

    def d_after_one_step(r1: float, at_step: int) -> dict:
        t = make_trainer(None, **{"train.r1": r1, "train.r1_every": 4})
        t.load_state_dict(copy.deepcopy(state))
        t.step = at_step
        t.train_step()
        return t.D.state_dict()

    def same(a: dict, b: dict) -> bool:
        return all(torch.equal(v, b[k]) for k, v in a.items())

    assert same(d_after_one_step(0.0, 5), d_after_one_step(10.0, 5))       # step 5: no penalty
    assert not same(d_after_one_step(0.0, 8), d_after_one_step(10.0, 8))   # step 8: penalised
