"""Inference-time folding of BatchNorm into the convolution before it.

A frozen (or eval-mode) BatchNorm is an affine map per channel, so it can be
absorbed into the preceding convolution's weights and bias: one pass over the
feature map instead of two. Only for inference: the folded model has no
normalisation parameters left to train.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

_BATCH_NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)


def _is_foldable(norm: nn.Module) -> bool:
    if isinstance(norm, FrozenBatchNorm2d):
        return True
    return isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats and norm.running_mean is not None


def _left_after_fold(norm: nn.Module) -> nn.Module:
    """What replaces a folded norm: nothing, or the dropout and activation of timm's ``BatchNormAct2d``."""
    tail = [getattr(norm, name, None) for name in ("drop", "act")]
    tail = [m for m in tail if isinstance(m, nn.Module) and not isinstance(m, nn.Identity)]
    if not tail:
        return nn.Identity()
    return tail[0] if len(tail) == 1 else nn.Sequential(*tail)


@torch.no_grad()
def fold_into_conv(conv: nn.Conv2d, norm: nn.Module) -> None:
    """Make ``conv`` compute ``norm(conv(x))`` (in place; ``norm`` must then be dropped)."""
    eps = norm.eps
    scale = norm.running_var.add(eps).rsqrt()
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype))
    if conv.bias is None:
        conv.bias = nn.Parameter(shift.to(conv.weight.dtype))
    else:
        conv.bias.copy_(conv.bias * scale + shift)


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every BatchNorm directly after a Conv2d into it, in place; returns how many were folded.

    Pairs are found as adjacent children of an ``nn.Sequential`` and as the
    ``convN``/``bnN`` attributes of torchvision's ResNet blocks. A norm with its own activation
    (timm's ``BatchNormAct2d``) is replaced by that activation. Training-mode BatchNorm is refused:
    its statistics are not fixed yet.
    """
    folded = 0
    for parent in list(module.modules()):
        pairs: list[tuple[str, str]] = []
        if isinstance(parent, nn.Sequential):
            names = [name for name, _ in parent.named_children()]
            pairs = list(zip(names, names[1:], strict=False))
        else:
            pairs = [(f"conv{k}", f"bn{k}") for k in range(1, 4)]
        for conv_name, norm_name in pairs:
            conv = getattr(parent, conv_name, None)
            norm = getattr(parent, norm_name, None)
            if not isinstance(conv, nn.Conv2d) or not isinstance(norm, _BATCH_NORMS) or not _is_foldable(norm):
                continue
            if norm.training and isinstance(norm, nn.BatchNorm2d):
                raise RuntimeError("fold_batchnorm needs eval-mode BatchNorm (call model.eval() first)")
            fold_into_conv(conv, norm)
            setattr(parent, norm_name, _left_after_fold(norm))
            folded += 1
    return folded
