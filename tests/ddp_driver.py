"""Trains the small Trainer under torchrun (gloo) and saves rank 0's weights.

usage: torchrun --nproc_per_node=2 tests/ddp_driver.py OUT STEPS [PARAMS_JSON]
"""
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from train_driver import SGD_LRS, make_trainer, with_plain_sgd  # noqa: E402

if __name__ == "__main__":
    dist.init_process_group("gloo")
    extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    t = with_plain_sgd(make_trainer(None, **SGD_LRS, **{"train.ema": False, "train.steps": int(sys.argv[2])},
                                    **extra))
    t.run(progress=False)
    if dist.get_rank() == 0:
        torch.save({"G": t.G.state_dict(), "D": t.D.state_dict()}, sys.argv[1])
    dist.barrier()
    dist.destroy_process_group()
