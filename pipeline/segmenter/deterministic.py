"""Deterministic twins of the DeepLab ops that have no deterministic CUDA kernel.

``torch.use_deterministic_algorithms(True)`` refuses, on CUDA, the backward of bilinear
upsampling and of adaptive average pooling and the 2-D cross entropy (``nll_loss2d``): their
kernels accumulate with ``atomicAdd``. DeepLab uses all three (``nn.Upsample`` in the decoder
and the head, ``AdaptiveAvgPool2d(1)`` and ``F.interpolate`` in ASPP's image pooling, the
loss). Their twins here compute the same numbers (within float rounding) from ops whose CUDA
kernels are deterministic:

- bilinear resizing as two products with interpolation matrices, ``R_h @ x @ R_w^T``
  (its backward is two matrix products too);
- global average pooling as a mean over H and W (its backward is an expand);
- the cross entropy as a masked sum of log-probabilities (no ``nll_loss``).

They are slower than the originals, so only the deterministic segmenter uses them
(:func:`make_deterministic`, ``wsss train-segmenter --deterministic``); the weights and
checkpoints are the same either way. On CUDA, cuBLAS is deterministic only with
``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (or ``:16:8``) set before its first use, which the engine's
deterministic mode sets (:func:`s4net.engine.devices.deterministic_cublas`).
"""

from __future__ import annotations

import functools
import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

@functools.lru_cache(maxsize=64)
def _interpolation_matrix_cpu(in_size: int, out_size: int, align_corners: bool, scale: float | None) -> Tensor:
    dst = torch.arange(out_size, dtype=torch.float64)
    if align_corners:
        src = dst * ((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
    else:  # torch's area_pixel_compute_scale: 1 / scale_factor when one was given, else in / out
        ratio = 1.0 / scale if scale is not None and scale > 0 else in_size / out_size
        src = ((dst + 0.5) * ratio - 0.5).clamp(min=0.0)
    low = src.floor().long().clamp(max=in_size - 1)
    high = (low + 1).clamp(max=in_size - 1)
    upper = src - low
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)
    matrix.index_put_((rows, low), 1.0 - upper, accumulate=True)
    matrix.index_put_((rows, high), upper, accumulate=True)
    return matrix


def interpolation_matrix(in_size: int, out_size: int, align_corners: bool, scale: float | None = None,
                         device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """Tensor[out_size, in_size]: 1-D linear interpolation as ``F.interpolate`` computes it, as a matrix.

    Row ``i`` holds the weights of output ``i`` on the inputs (two non-zeros summing to 1).
    ``scale`` is the ``scale_factor`` the resize was asked with (None when a size was given);
    torch maps coordinates with it when ``align_corners`` is False.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"interpolation sizes must be >= 1, got {in_size} -> {out_size}")
    return _interpolation_matrix_cpu(in_size, out_size, align_corners, scale).to(device=device, dtype=dtype)


def bilinear_resize(x: Tensor, size: tuple[int, int], align_corners: bool,
                    scales: tuple[float | None, float | None] = (None, None)) -> Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=...)`` of Tensor[N, C, H, W] as
    ``R_h @ x @ R_w^T``: the same numbers (within float rounding), a deterministic backward."""
    (in_h, in_w), (out_h, out_w) = x.shape[-2:], size
    dtype = x.dtype if x.is_floating_point() else torch.float32
    rows = interpolation_matrix(in_h, out_h, align_corners, scales[0], x.device, dtype)
    cols = interpolation_matrix(in_w, out_w, align_corners, scales[1], x.device, dtype)
    return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


class MatmulBilinearUpsample(nn.Module):
    """``nn.Upsample(mode="bilinear")`` computed by :func:`bilinear_resize` (``recompute_scale_factor``: map
    coordinates by the sizes, not by the scale factor, as ``F.interpolate`` does with it)."""

    def __init__(self, size: int | tuple[int, int] | None = None,
                 scale_factor: float | tuple[float, float] | None = None, align_corners: bool = False,
                 recompute_scale_factor: bool = False) -> None:
        super().__init__()
        if (size is None) == (scale_factor is None):
            raise ValueError("MatmulBilinearUpsample needs exactly one of size and scale_factor")
        self.size = (size, size) if isinstance(size, int) else size
        self.scale_factor = ((float(scale_factor),) * 2 if isinstance(scale_factor, (int, float))
                             else None if scale_factor is None else tuple(map(float, scale_factor)))
        self.align_corners = bool(align_corners)
        self.recompute_scale_factor = bool(recompute_scale_factor)

    def forward(self, x: Tensor) -> Tensor:
        if self.scale_factor is None:
            return bilinear_resize(x, tuple(self.size), self.align_corners)
        size = tuple(math.floor(length * scale) for length, scale in zip(x.shape[-2:], self.scale_factor, strict=True))
        return bilinear_resize(x, size, self.align_corners,
                               (None, None) if self.recompute_scale_factor else self.scale_factor)

    def extra_repr(self) -> str:
        shape = f"size={self.size}" if self.scale_factor is None else f"scale_factor={self.scale_factor}"
        return f"{shape}, align_corners={self.align_corners}"


class GlobalAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d(1)`` as a mean over H and W: Tensor[N, C, H, W] -> Tensor[N, C, 1, 1]."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(-2, -1), keepdim=True)


class DeterministicASPPPooling(nn.Sequential):
    """segmentation-models-pytorch's ``ASPPPooling`` (pool, 1x1 conv, BN, ReLU, back to the input's size) with its
    ``F.interpolate`` done by :func:`bilinear_resize`; the same children, so the same state dict keys."""

    def forward(self, x: Tensor) -> Tensor:
        size = tuple(x.shape[-2:])
        for module in self:
            x = module(x)
        return bilinear_resize(x, size, align_corners=False)


def _aspp_pooling_class() -> type | None:
    try:
        from segmentation_models_pytorch.decoders.deeplabv3.decoder import ASPPPooling
    except ImportError:  # pragma: no cover - only with a segmentation-models-pytorch that moved it
        return None
    return ASPPPooling


def _twin(module: nn.Module, aspp_pooling: type | None) -> nn.Module:
    """The deterministic replacement of one module (the module itself when it needs none)."""
    if aspp_pooling is not None and type(module) is aspp_pooling:
        twin = DeterministicASPPPooling(*module.children())
        return twin.train(module.training)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        size = module.output_size
        if size not in (1, (1, 1)):
            raise ValueError(f"no deterministic twin for AdaptiveAvgPool2d(output_size={size}) (only 1 is handled)")
        return GlobalAvgPool2d().train(module.training)
    if isinstance(module, nn.Upsample) and module.mode == "bilinear":
        twin = MatmulBilinearUpsample(module.size, module.scale_factor, bool(module.align_corners),
                                      bool(module.recompute_scale_factor))
        return twin.train(module.training)
    return module


def make_deterministic(model: nn.Module) -> nn.Module:
    """Replace, in place, DeepLab's modules that lack a deterministic CUDA backward by their twins; returns ``model``.

    Bilinear ``nn.Upsample`` -> :class:`MatmulBilinearUpsample`, ``AdaptiveAvgPool2d(1)`` ->
    :class:`GlobalAvgPool2d`, smp's ``ASPPPooling`` -> :class:`DeterministicASPPPooling`. Parameters and
    buffers are kept, so the state dict (and any checkpoint) is the same as the original model's.
    """
    aspp_pooling = _aspp_pooling_class()

    def visit(module: nn.Module) -> None:
        for name, child in list(module.named_children()):
            twin = _twin(child, aspp_pooling)
            if twin is not child:
                setattr(module, name, twin)
            visit(twin)

    visit(model)
    return model


def masked_cross_entropy_sum(logits: Tensor, labels: Tensor, ignore_index: int) -> Tensor:
    """``F.cross_entropy(logits, labels, ignore_index=..., reduction="sum")`` of Tensor[N, C, H, W] logits and
    Tensor[N, H, W] labels without ``nll_loss``: minus the log-probabilities picked by a class mask, summed.

    A label outside ``0 .. C - 1`` (``ignore_index`` among them) picks nothing.
    """
    if ignore_index in range(logits.shape[1]):
        raise ValueError(f"ignore_index={ignore_index} is a class index of {logits.shape[1]} classes")
    log_probs = F.log_softmax(logits, dim=1)
    classes = torch.arange(logits.shape[1], device=labels.device).view(1, -1, *([1] * (labels.dim() - 1)))
    picked = labels.unsqueeze(1) == classes
    return -torch.where(picked, log_probs, torch.zeros((), dtype=log_probs.dtype, device=log_probs.device)).sum()
