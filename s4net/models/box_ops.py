"""Anchors, box coding and anchor matching of the single-stage detector."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import box_iou


class AnchorGenerator:
    """One anchor per ratio at every cell of every level (one scale per level).

    Anchors are centred on cell centres ``(k + 0.5) * stride``; the side of the
    square anchor is ``size_per_stride * stride`` and the other ratios keep its
    area (ratio = height / width).
    """

    def __init__(self, strides: tuple[int, ...], ratios: tuple[float, ...], size_per_stride: float = 4.0) -> None:
        self.strides = tuple(strides)
        self.ratios = tuple(ratios)
        self.size_per_stride = size_per_stride

    @property
    def num_anchors_per_location(self) -> int:
        return len(self.ratios)

    def cell_anchors(self, stride: int, device: torch.device) -> Tensor:
        """Tensor[A, 4] anchors centred on (0, 0)."""
        side = self.size_per_stride * stride
        ratios = torch.tensor(self.ratios, dtype=torch.float32, device=device)
        heights = side * ratios.sqrt()
        widths = side / ratios.sqrt()
        return torch.stack([-widths / 2, -heights / 2, widths / 2, heights / 2], dim=1)

    def grid_anchors(self, stride: int, height: int, width: int, device: torch.device) -> Tensor:
        """Tensor[H * W * A, 4] in (y, x, anchor) order, matching the head's layout."""
        ys = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) * stride
        xs = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) * stride
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)
        return (centres + self.cell_anchors(stride, device)[None]).reshape(-1, 4)

    def __call__(self, feature_sizes: list[tuple[int, int]], device: torch.device) -> list[Tensor]:
        """Anchors per level for feature maps of the given (H, W)."""
        if len(feature_sizes) != len(self.strides):
            raise ValueError(f"{len(feature_sizes)} feature maps for {len(self.strides)} strides")
        return [self.grid_anchors(s, h, w, device) for s, (h, w) in zip(self.strides, feature_sizes, strict=True)]


class BoxCoder:
    """Faster R-CNN box deltas ``(dx, dy, dw, dh)`` relative to anchors.

    ``weights`` divide the deltas (torchvision's convention); (1, 1, 1, 1) is the
    original code's unnormalised coding.
    """

    def __init__(self, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
                 clamp: float = math.log(1000.0 / 16)) -> None:
        self.weights = weights
        self.clamp = clamp

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """Tensor[N, 4] deltas that turn ``anchors`` into ``boxes`` (both x1y1x2y2)."""
        wx, wy, ww, wh = self.weights
        aw = anchors[:, 2] - anchors[:, 0]
        ah = anchors[:, 3] - anchors[:, 1]
        ax = anchors[:, 0] + 0.5 * aw
        ay = anchors[:, 1] + 0.5 * ah
        bw = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-3)
        bh = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-3)
        bx = boxes[:, 0] + 0.5 * bw
        by = boxes[:, 1] + 0.5 * bh
        return torch.stack(
            [wx * (bx - ax) / aw, wy * (by - ay) / ah, ww * torch.log(bw / aw), wh * torch.log(bh / ah)], dim=1
        )

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Inverse of :meth:`encode`: Tensor[N, 4] boxes (x1, y1, x2, y2)."""
        wx, wy, ww, wh = self.weights
        deltas = deltas.to(anchors.dtype)
        aw = anchors[:, 2] - anchors[:, 0]
        ah = anchors[:, 3] - anchors[:, 1]
        ax = anchors[:, 0] + 0.5 * aw
        ay = anchors[:, 1] + 0.5 * ah
        cx = deltas[:, 0] / wx * aw + ax
        cy = deltas[:, 1] / wy * ah + ay
        w = torch.exp((deltas[:, 2] / ww).clamp(max=self.clamp)) * aw
        h = torch.exp((deltas[:, 3] / wh).clamp(max=self.clamp)) * ah
        return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=1)


POSITIVE, IGNORE, NEGATIVE = 1, -1, 0


class Matcher:
    """Label anchors against ground-truth boxes by IoU.

    ``__call__`` returns ``(labels, matched_idxs)``: labels Tensor[A] with 1
    (positive: IoU >= ``positive_iou``), 0 (negative: IoU < ``negative_iou``) or
    -1 (ignored, in between); matched_idxs Tensor[A] the GT of highest IoU.
    With ``low_quality`` each GT's best anchors (ties included) are positive too.
    """

    def __init__(self, positive_iou: float, negative_iou: float, low_quality: bool = True) -> None:
        if negative_iou > positive_iou:
            raise ValueError(f"negative_iou {negative_iou} > positive_iou {positive_iou}")
        self.positive_iou = positive_iou
        self.negative_iou = negative_iou
        self.low_quality = low_quality

    def __call__(self, gt_boxes: Tensor, anchors: Tensor) -> tuple[Tensor, Tensor]:
        num = anchors.shape[0]
        if gt_boxes.numel() == 0:
            zeros = torch.zeros(num, dtype=torch.long, device=anchors.device)
            return zeros.clone(), zeros
        iou = box_iou(gt_boxes, anchors)  # [G, A]
        best_iou, matched_idxs = iou.max(dim=0)
        labels = torch.full((num,), IGNORE, dtype=torch.long, device=anchors.device)
        labels[best_iou < self.negative_iou] = NEGATIVE
        labels[best_iou >= self.positive_iou] = POSITIVE
        if self.low_quality:
            best_per_gt = iou.max(dim=1, keepdim=True).values
            gt_index, anchor_index = torch.nonzero((iou == best_per_gt) & (best_per_gt > 0), as_tuple=True)
            labels[anchor_index] = POSITIVE
            matched_idxs[anchor_index] = gt_index
        return labels, matched_idxs
