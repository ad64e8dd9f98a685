"""pipeline.optim.Adam: torch's Adam to the bit, without importing the compiler."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from pipeline.optim import Adam


def _train(opt_class, fused: bool | None, steps: int = 5) -> tuple[dict, dict]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3))
    opt = opt_class(model.parameters(), lr=1e-2, betas=(0.5, 0.999), fused=fused)
    x = torch.randn(8, 1, 8, 8)
    for step in range(steps):
        if step == 3:  # through a checkpoint, as a resumed training does
            state = opt.state_dict()
            opt = opt_class(model.parameters(), lr=1e-2, betas=(0.5, 0.999), fused=fused)
            opt.load_state_dict(state)
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    return {k: v.clone() for k, v in model.state_dict().items()}, opt.state_dict()


@pytest.mark.parametrize("fused", [None, True])
def test_the_weights_are_torchs_adams_to_the_bit(fused):
    ours, our_state = _train(Adam, fused)
    theirs, their_state = _train(torch.optim.Adam, fused)
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert torch.equal(ours[k], theirs[k]), k
    for i, s in their_state["state"].items():
        for k, v in s.items():
            assert torch.equal(our_state["state"][i][k], v), (i, k)


def test_a_training_step_does_not_import_the_compiler():
    """The point of the class: torch.optim.Adam's first step imports torch._dynamo (1.5-2.5 CPU-s on Zen 3).
    If a torch upgrade moves the import elsewhere, this fails and pipeline/optim.py needs a look."""
    code = (
        "import sys, torch\n"
        "from pipeline.optim import Adam\n"
        "m = torch.nn.Linear(3, 2); o = Adam(m.parameters(), lr=0.1)\n"
        "sched = torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.3, total_steps=4)\n"
        "for _ in range(2):\n"
        "    o.zero_grad(); m(torch.ones(4, 3)).sum().backward(); o.step(); sched.step()\n"
        "o.load_state_dict(o.state_dict())\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
