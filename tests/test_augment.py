"""DiffAugment of D's inputs (pipeline/augment.py): what each transform does to an image, that
gradients pass through it, and that draws are reproducible and shareable across DDP ranks."""
from __future__ import annotations

import pytest
import torch

from pipeline import augment


def dot_image(n: int, row: int = 14, col: int = 14) -> torch.Tensor:
    x = torch.full((n, 1, 28, 28), augment.BACKGROUND)
    x[:, :, row, col] = 1.0
    return x


def test_translation_moves_each_image_by_its_offset_and_pads_with_background():
    x = dot_image(3)
    dy, dx = torch.tensor([4, -4, 0]), torch.tensor([-3, 2, 0])
    y = augment.translate(x, dy, dx)
    for i in range(3):
        bright = (y[i, 0] > 0).nonzero().tolist()
        assert bright == [[14 + dy[i].item(), 14 + dx[i].item()]]
    assert y.min() == augment.BACKGROUND and y.shape == x.shape
    # shifting the dot off the image leaves background only
    edge = augment.translate(dot_image(1, 0, 0), torch.tensor([-4]), torch.tensor([0]))
    assert (edge == augment.BACKGROUND).all()


def test_cutout_erases_one_square_of_half_the_size():
    x = torch.ones(2, 1, 28, 28)
    y = augment.cutout(x, torch.tensor([14, 0]), torch.tensor([14, 0]))
    erased = (y == augment.BACKGROUND).sum((1, 2, 3)).tolist()
    assert erased[0] == 14 * 14           # centred inside the image: the full square
    assert erased[1] == 7 * 7             # centred on a corner: clipped to a quarter
    assert (y[0, 0, 7:21, 7:21] == augment.BACKGROUND).all()


def test_gradients_flow_to_the_generator_through_the_augmentation():
    x = torch.randn(4, 1, 28, 28, requires_grad=True)
    params = augment.draw(4, "translation_cutout", torch.Generator().manual_seed(0))
    augment.apply(x, params).sum().backward()
    kept = (augment.apply(torch.ones(4, 1, 28, 28), params) == 1).sum()
    assert x.grad.sum() == kept  # every pixel that reaches D gets gradient 1, the rest 0


def test_draws_are_reproducible_and_policies_validated():
    a = augment.draw(8, "translation_cutout", torch.Generator().manual_seed(3))
    b = augment.draw(8, "translation_cutout", torch.Generator().manual_seed(3))
    assert a.keys() == {"dy", "dx", "cy", "cx"} and all(torch.equal(a[k], b[k]) for k in a)
    assert a["dy"].abs().max() <= 4 and a["dx"].abs().max() <= 4
    assert augment.draw(8, "translation", torch.Generator()).keys() == {"dy", "dx"}
    assert augment.draw(8, "none", torch.Generator()) == {}
    with pytest.raises(ValueError, match="translation_cutout"):
        augment.draw(8, "flip", torch.Generator())


def test_a_rank_sees_its_share_of_the_global_batch_draw():
    x = torch.randn(8, 1, 28, 28)
    params = augment.draw(8, "translation_cutout", torch.Generator().manual_seed(1))
    whole = augment.apply(x, params)
    for rows in (slice(0, 4), slice(4, 8)):
        assert torch.equal(augment.apply(x[rows], augment.select(params, rows)), whole[rows])
