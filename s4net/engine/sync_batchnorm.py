"""BatchNorm whose batch statistics span every rank's share of the global batch, on any device.

torch's ``nn.SyncBatchNorm`` runs on GPUs only; this one reduces its sums with
``torch.distributed.nn`` (gloo on CPU, NCCL on CUDA), so the same code is tested on a CPU and
run on a cluster. With one process it is plain BatchNorm. Its state dict is BatchNorm's:
checkpoints load either way.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from s4net.engine.distributed import active


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose backward sums the gradients over the ranks in turn: d(sum_s y_s)/dx_r for each r."""

    @staticmethod
    def forward(ctx: object, value: torch.Tensor) -> torch.Tensor:
        out = value.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _summed(value: torch.Tensor) -> torch.Tensor:
    """The sum over ranks, with gradients flowing back to every rank's share."""
    return _SumOverRanks.apply(value)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d normalising with the mean and variance of the global batch (all ranks together)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        dims = (0, 2, 3)
        count = _summed(torch.tensor([x.shape[0] * x.shape[2] * x.shape[3]], dtype=torch.float32, device=x.device))
        data = x.float()
        mean = _summed(data.sum(dims)) / count
        centred = data - mean.view(1, -1, 1, 1)
        var = _summed((centred * centred).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var.detach() * count / (count - 1).clamp_min(1)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        out = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out.to(x.dtype)


class GlobalBatchNormAct2d(GlobalBatchNorm2d):
    """:class:`GlobalBatchNorm2d` followed by the dropout and activation of the timm ``BatchNormAct2d`` it replaces
    (same state dict: they hold no tensors)."""

    def __init__(self, *args: object, drop: nn.Module, act: nn.Module, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.drop, self.act = drop, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every trained :class:`nn.BatchNorm2d` replaced by a :class:`GlobalBatchNorm2d` (same state);
    timm's ``BatchNormAct2d`` (a BatchNorm2d with an activation inside) by a :class:`GlobalBatchNormAct2d`."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlobalBatchNorm2d):
        args = (module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if isinstance(getattr(module, "act", None), nn.Module):
            replacement = GlobalBatchNormAct2d(*args, drop=getattr(module, "drop", nn.Identity()), act=module.act,
                                               device=_device_of(module))
        else:
            replacement = GlobalBatchNorm2d(*args, device=_device_of(module))
        replacement.load_state_dict(module.state_dict())
        replacement.train(module.training)
        if module.affine:
            replacement.weight.requires_grad_(module.weight.requires_grad)
            replacement.bias.requires_grad_(module.bias.requires_grad)
        return replacement
    for name, child in module.named_children():
        converted = convert_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


def _device_of(module: nn.Module) -> torch.device | None:
    tensor = next(iter(module.state_dict().values()), None)
    return tensor.device if tensor is not None else None

