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

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import roi_align, roi_pool

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
    return torch.stack([boxes[:, 0] - alpha * w, boxes[:, 1] - alpha * h, boxes[:, 2] + alpha * w, boxes[:, 3] + alpha * h], 1)


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


@dataclass(frozen=True)
class Windows:
    """Equal-size windows of a feature map, one per instance.

    Attributes:
        image_index: Tensor[N] long, which image of the batch each window reads.
        origin: Tensor[N, 2] long (x0, y0), top-left cell of each window.
        size: (height, width) in cells, the same for all windows.
    """

    image_index: Tensor
    origin: Tensor
    size: tuple[int, int]

    def pixel_boxes(self, stride: float) -> Tensor:
        """Tensor[N, 4] the windows' extents (x1, y1, x2, y2) in input pixels."""
        h, w = self.size
        xy = self.origin.to(torch.float32) * stride
        return torch.cat([xy, xy + torch.tensor([w * stride, h * stride], device=xy.device)], dim=1)


def _window_spans(boxes: Tensor, stride: float, map_size: tuple[int, int], margin: int) -> tuple[Tensor, Tensor]:
    """First cell and size (x, y) of each box's own window: the box plus ``margin`` cells, inside the map."""
    map_h, map_w = map_size
    limits = torch.tensor([map_w, map_h], device=boxes.device)
    first = (torch.floor(boxes[:, :2] / stride).long() - margin).clamp(min=0)
    last = torch.minimum(torch.ceil(boxes[:, 2:] / stride).long() + margin, limits)  # exclusive
    return first, (last - first).clamp(min=1)


def instance_windows(
    boxes: Tensor, image_index: Tensor, stride: float, map_size: tuple[int, int], margin: int | None
) -> Windows:
    """Windows covering each box plus ``margin`` cells (the whole map when margin is None).

    All windows share the size of the largest one, shifted to stay inside the map,
    so that one batched gather and one forward serve every instance.
    """
    map_h, map_w = map_size
    n = boxes.shape[0]
    if margin is None or n == 0:
        origin = torch.zeros((n, 2), dtype=torch.long, device=boxes.device)
        return Windows(image_index, origin, (map_h, map_w))
    first, span = _window_spans(boxes, stride, map_size, margin)
    extent = span.amax(dim=0)
    origin = torch.minimum(first, torch.tensor([map_w, map_h], device=boxes.device) - extent)
    width, height = int(extent[0]), int(extent[1])
    return Windows(image_index, origin, (height, width))


def window_groups(
    boxes: Tensor, stride: float, map_size: tuple[int, int], margin: int | None, waste: float = 1.5
) -> list[Tensor]:
    """Split instances into groups whose shared window wastes at most ``waste`` x each one's own area.

    Instances are taken largest window first; each joins the first group whose
    window already covers its own and is at most ``waste`` times its area, or
    starts a new group. Returns index tensors (every instance in exactly one).
    """
    n = boxes.shape[0]
    if margin is None or n <= 1:
        return [torch.arange(n, device=boxes.device)]
    _, span = _window_spans(boxes, stride, map_size, margin)
    sizes = span.tolist()
    order = sorted(range(n), key=lambda i: -sizes[i][0] * sizes[i][1])
    groups: list[tuple[int, int, list[int]]] = []  # (width, height, members)
    for i in order:
        w, h = sizes[i]
        for gw, gh, members in groups:
            if w <= gw and h <= gh and gw * gh <= waste * w * h:
                members.append(i)
                break
        else:
            groups.append((w, h, [i]))
    return [torch.tensor(sorted(members), dtype=torch.long, device=boxes.device) for _, _, members in groups]


def gather_windows(features: Tensor, windows: Windows) -> Tensor:
    """Tensor[N, C, h, w]: each window cut out of ``features`` [B, C, H, W] in one gather."""
    h, w = windows.size
    device = features.device
    ys = windows.origin[:, 1, None] + torch.arange(h, device=device)[None]  # [N, h]
    xs = windows.origin[:, 0, None] + torch.arange(w, device=device)[None]  # [N, w]
    idx = windows.image_index[:, None, None]
    out = features.permute(0, 2, 3, 1)[idx, ys[:, :, None], xs[:, None, :]]  # [N, h, w, C]
    return out.permute(0, 3, 1, 2)


class RoIMasking(torch.nn.Module):
    """Per-instance region features for the segmentation branch.

    Args:
        variant: ``binary``, ``expanded``, ``ternary`` (RoIMasking) or ``roialign``,
            ``roipool`` (fixed-size baselines of the paper's Table 1).
        alpha: ring width / growth for ``ternary`` / ``expanded``.
        stride: stride of the input feature map (8).
        output_size: grid of the pooling baselines.
    """

    def __init__(self, variant: str = "ternary", alpha: float = 1.0 / 3.0, stride: int = 8, output_size: int = 14) -> None:
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

    def forward(self, features: Tensor, boxes: Tensor, image_index: Tensor, margin: int | None) -> tuple[Tensor, Windows | None]:
        """Masked (or pooled) features of every box.

        Args:
            features: Tensor[B, C, H, W] stride-``stride`` features (non-negative).
            boxes: Tensor[N, 4] in input pixels.
            image_index: Tensor[N] long, image of each box.
            margin: cells kept around each box (the branch's receptive field); None
                for the whole map. Ignored by the pooling baselines.

        Returns:
            (Tensor[N, C, h, w], windows); windows is None for the pooling baselines.
        """
        if self.is_pooling:
            rois = torch.cat([image_index[:, None].to(boxes.dtype), boxes], dim=1)
            size = (self.output_size, self.output_size)
            if self.variant == "roialign":
                pooled = roi_align(features, rois, size, spatial_scale=1.0 / self.stride, sampling_ratio=2, aligned=True)
            else:
                pooled = roi_pool(features, rois, size, spatial_scale=1.0 / self.stride)
            return pooled, None
        windows = instance_windows(boxes, image_index, self.stride, tuple(features.shape[-2:]), margin)
        region = gather_windows(features, windows)
        masks = box_masks(boxes, self.variant, self.alpha, self.stride, windows.origin, windows.size)
        return region * masks[:, None].to(region.dtype), windows
