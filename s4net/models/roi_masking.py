"""RoIMasking (Fan et al., Sec. 3.3) and the RoIAlign / RoIPool baselines.

RoIMasking keeps the feature map at full resolution and multiplies it by a
per-instance mask: ``binary`` (1 inside the box, 0 elsewhere), ``expanded``
(binary on the box grown by alpha on every side) or ``ternary`` (1 inside, -1 on a
ring of width alpha*w, alpha*h around the box, 0 elsewhere). Box edges rarely fall
on cell edges: a cell cut by an edge is weighted by the fraction of it that lies
inside, so the layer has no quantisation. Rings that leave the map are clipped.

Masks are built for all boxes at once from per-axis coverage vectors (an outer
product), never with a Python loop over boxes.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import roi_align, roi_pool

from s4net.models.windows import Windows, gather_windows

MASK_VARIANTS = ("binary", "expanded", "ternary")
POOL_VARIANTS = ("roialign", "roipool")


def axis_coverage(lo: Tensor, hi: Tensor, start: Tensor, cells: int, stride: float) -> Tensor:
    """Fraction of each cell covered by the interval ``[lo, hi]``.

    Args:
        lo, hi: Tensor[N] interval ends in pixels.
        start: Tensor[N] (integer) index of the first cell of each window.
        cells: number of cells per window.
        stride: cell size in pixels.

    Returns:
        Tensor[N, cells] in [0, 1]; cell ``j`` spans ``[(start + j) * stride, (start + j + 1) * stride)``.
    """
    edges = (start[:, None] + torch.arange(cells, device=lo.device, dtype=lo.dtype)[None]) * stride
    overlap = torch.minimum(hi[:, None], edges + stride) - torch.maximum(lo[:, None], edges)
    return overlap.clamp(min=0.0, max=stride) / stride


def grow_boxes(boxes: Tensor, alpha: float) -> Tensor:
    """Boxes grown by ``alpha * width`` left and right and ``alpha * height`` above and below."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return torch.stack([boxes[:, 0] - alpha * w, boxes[:, 1] - alpha * h,
                        boxes[:, 2] + alpha * w, boxes[:, 3] + alpha * h], 1)


def box_masks(
    boxes: Tensor, variant: str, alpha: float, stride: float, origin: Tensor, size: tuple[int, int]
) -> Tensor:
    """RoIMasking masks over windows of the feature map.

    Args:
        boxes: Tensor[N, 4] (x1, y1, x2, y2) in input pixels.
        variant: ``binary``, ``expanded`` or ``ternary``.
        alpha: ring width / growth as a fraction of the box size.
        stride: feature stride in pixels.
        origin: Tensor[N, 2] long, (x0, y0) cell index of each window's top-left cell.
        size: (height, width) of the windows in cells.

    Returns:
        Tensor[N, height, width]; cells beyond the map's border simply do not exist,
        so rings are clipped there.
    """
    if variant not in MASK_VARIANTS:
        raise ValueError(f"unknown RoIMasking variant {variant!r}; valid: {list(MASK_VARIANTS)}")
    height, width = size
    x0 = origin[:, 0].to(boxes.dtype)
    y0 = origin[:, 1].to(boxes.dtype)

    def product(b: Tensor) -> Tensor:
        cy = axis_coverage(b[:, 1], b[:, 3], y0, height, stride)
        cx = axis_coverage(b[:, 0], b[:, 2], x0, width, stride)
        return cy[:, :, None] * cx[:, None, :]

    if variant == "binary":
        return product(boxes)
    outer = product(grow_boxes(boxes, alpha))
    if variant == "expanded":
        return outer
    return 2.0 * product(boxes) - outer


class RoIMasking(torch.nn.Module):
    """Per-instance region features for the segmentation branch.

    Args:
        variant: ``binary``, ``expanded``, ``ternary`` (RoIMasking) or ``roialign``,
            ``roipool`` (fixed-size baselines of the paper's Table 1).
        alpha: ring width / growth for ``ternary`` / ``expanded``.
        stride: stride of the input feature map (8).
        output_size: grid of the pooling baselines.
    """

    def __init__(self, variant: str = "ternary", alpha: float = 1.0 / 3.0, stride: int = 8,
                 output_size: int = 14) -> None:
        super().__init__()
        if variant not in MASK_VARIANTS + POOL_VARIANTS:
            raise ValueError(f"unknown masking {variant!r}; valid: {list(MASK_VARIANTS + POOL_VARIANTS)}")
        self.variant = variant
        self.alpha = alpha
        self.stride = stride
        self.output_size = output_size

    @property
    def is_pooling(self) -> bool:
        return self.variant in POOL_VARIANTS

    def support(self, boxes: Tensor) -> Tensor:
        """Tensor[N, 4] where the masked features can be non-zero: the box, or the box grown by alpha."""
        return boxes if self.variant == "binary" else grow_boxes(boxes, self.alpha)

    def forward(self, features: Tensor, boxes: Tensor, image_index: Tensor, windows: Windows | None) -> Tensor:
        """Masked (or pooled) features of every box.

        Args:
            features: Tensor[B, C, H, W] stride-``stride`` features (non-negative).
            boxes: Tensor[N, 4] in input pixels.
            image_index: Tensor[N] long, image of each box.
            windows: where each instance's region is cut from the map (see
                :mod:`s4net.models.windows`); ignored by the pooling baselines.

        Returns:
            Tensor[N, C, h, w]: the windows' features times the masks, or the pooled grids.
        """
        if self.is_pooling:
            rois = torch.cat([image_index[:, None].to(boxes.dtype), boxes], dim=1)
            size = (self.output_size, self.output_size)
            if self.variant == "roialign":
                return roi_align(features, rois, size, spatial_scale=1.0 / self.stride, sampling_ratio=2, aligned=True)
            # torchvision's roi_pool has no autocast rule (roi_align has): under bfloat16 autocast the features
            # arrive in bfloat16 and the kernel refuses float32 boxes, so it pools in float32
            pooled = roi_pool(features.float(), rois.float(), size, spatial_scale=1.0 / self.stride)
            return pooled.to(features.dtype)
        if windows is None:
            raise ValueError(f"RoIMasking {self.variant!r} needs the windows to cut (see s4net.models.windows)")
        region = gather_windows(features, windows.image_index, windows.origin, windows.size)
        masks = box_masks(boxes, self.variant, self.alpha, self.stride, windows.origin, windows.size)
        return region * masks[:, None].to(region.dtype)
