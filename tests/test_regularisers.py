"""D's regularisers for 4,000 digits: LeCam (train.lecam) and adaptive augmentation (train.augment_target).
What each computes, that a resumed run continues them exactly, and that they are off by default."""
import copy
import sys
from pathlib import Path

import torch

from pipeline import augment

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
