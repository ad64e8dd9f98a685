"""Multi-process training helpers: synchronised batch norm that also works on CPU (gloo).

torch.nn.SyncBatchNorm runs only on CUDA; on CPU the batch statistics are all-reduced here with
the differentiable torch.distributed.nn.all_reduce, which gives the same normalisation as one
process seeing the whole global batch.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class CpuSyncBatchNorm(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce  # differentiable

        xd = x.double()
        n_local = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float64)
        stats = torch.cat([xd.sum((0, 2, 3)), (xd * xd).sum((0, 2, 3)), n_local])
        stats = all_reduce(stats)
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c:2 * c] / n - mean * mean
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean.float(), alpha=m)
            self.running_var.mul_(1 - m).add_((var * n / (n - 1)).float(), alpha=m)
        y = (xd - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)
        return (y.to(x.dtype) * self.weight[None, :, None, None] + self.bias[None, :, None, None])


def convert_sync_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """SyncBatchNorm on CUDA, CpuSyncBatchNorm on CPU; parameters and buffers are kept."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = CpuSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            convert_sync_batchnorm(child, device_type)
    return module
