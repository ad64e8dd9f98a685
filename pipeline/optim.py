"""torch.optim.Adam, less its import of the Dynamo compiler.

Adam's step and several Optimizer methods import `torch._dynamo` on their first call (to mark them
as not traceable, and to break a traced graph around the step): 1.5-2.5 CPU-s of every training
process's start on Zen 3 (the trainer, both evaluators, every grid run), for a compiler that eager
runs never load. Here the same functions run, in the same grad mode, without that import while the
compiler is not loaded; once it is (`train.compile`), torch's own wrappers run as they are.
`tests/test_optim.py` checks the weights stay bit-identical to torch's Adam and that the import is gone.
"""
from __future__ import annotations

import sys

import torch

_ADAM_MODULE = sys.modules[torch.optim.Adam.__module__]
# torch._disable_dynamo's wrappers keep the function to call as `fn.__dynamo_disable`, made on the first call by
# importing Dynamo; set beforehand to the function itself, the wrapper calls it as it is
_DISABLE_WRAPPED = (torch.optim.Optimizer.__init__, torch.optim.Optimizer.add_param_group,
                    torch.optim.Optimizer.zero_grad, torch.optim.Optimizer.state_dict,
                    torch.optim.Optimizer.load_state_dict, getattr(_ADAM_MODULE, "adam", None))
# Adam.step under torch's `_use_grad_for_differentiable`, which imports Dynamo to place a graph break
_ADAM_STEP = getattr(torch.optim.Adam.step, "__wrapped__", None)


def _compiler_loaded() -> bool:
    return "torch._dynamo" in sys.modules


def _skip_dynamo_wrappers() -> None:
    if _compiler_loaded():
        return
    for fn in _DISABLE_WRAPPED:
        inner = getattr(fn, "__wrapped__", None)
        if inner is not None and getattr(inner, "__dynamo_disable", None) is None:
            inner.__dynamo_disable = inner


class Adam(torch.optim.Adam):
    """torch.optim.Adam; the same arithmetic, with no compiler import while none is loaded."""

    def __init__(self, *args, **kwargs):
        _skip_dynamo_wrappers()
        super().__init__(*args, **kwargs)

    def step(self, closure=None):
        if _ADAM_STEP is None or _compiler_loaded() or self.defaults.get("differentiable"):
            return super().step(closure)
        # what `_use_grad_for_differentiable` does for a non-differentiable optimizer, less its graph break
        with torch.no_grad():
            return _ADAM_STEP(self, closure)
