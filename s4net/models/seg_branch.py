"""The segmentation branch ("salient instance discriminator", Fan et al., Sec. 3.5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _conv(cin: int, cout: int, dilation: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(conv.bias)
    return conv


class ResidualBlock(nn.Module):
    """Two 3x3 conv + ReLU, added to the input (a 1x1 projection when channels change)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = _conv(cin, cout)
        self.conv2 = _conv(cout, cout)
        self.project = nn.Conv2d(cin, cout, 1) if cin != cout else None
        with torch.no_grad():  # start near identity so stacked residuals do not blow activations up
            self.conv2.weight.mul_(0.1)

    def forward(self, x: Tensor) -> Tensor:
        branch = F.relu(self.conv2(F.relu(self.conv1(x))))
        return branch + (x if self.project is None else self.project(x))


class SegmentationBranch(nn.Module):
    """maxpool 3x3/1 -> residual(c1) -> maxpool 3x3/1 -> dilated conv(c2, d=2) -> residual(c2) -> 2-class logits.

    Every conv is 3x3, stride 1, so the output keeps the input's resolution
    (stride 8). ``receptive_radius`` is how many cells an output cell sees on each
    side: the margin a window needs so that outputs inside a box do not change.
    """

    receptive_radius = 1 + 2 + 1 + 2 + 2 + 1

    def __init__(self, in_channels: int, channels: tuple[int, int] = (128, 64)) -> None:
        super().__init__()
        c1, c2 = channels
        self.res1 = ResidualBlock(in_channels, c1)
        self.dilated = _conv(c1, c2, dilation=2)
        self.res2 = ResidualBlock(c2, c2)
        self.logits = nn.Conv2d(c2, 2, 3, padding=1)
        nn.init.normal_(self.logits.weight, std=0.001)
        nn.init.zeros_(self.logits.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[N, C, h, w] masked features -> Tensor[N, 2, h, w] background/foreground logits."""
        x = F.max_pool2d(x, 3, stride=1, padding=1)
        x = self.res1(x)
        x = F.max_pool2d(x, 3, stride=1, padding=1)
        x = F.relu(self.dilated(x))
        x = self.res2(x)
        return self.logits(x)


def weighted_ce(logits: Tensor, targets: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """(sum of weighted 2-class cross-entropy, sum of weights) over a set of instances.

    Args:
        logits: Tensor[N, 2, h, w].
        targets: Tensor[N, h, w] foreground probability in [0, 1] (soft at cut cells).
        weights: Tensor[N, h, w] (the inside-box coverage: the ring and outside are unsupervised).
    """
    log_p = F.log_softmax(logits.float(), dim=1)
    ce = -(targets * log_p[:, 1] + (1.0 - targets) * log_p[:, 0])
    return (ce * weights).sum(), weights.sum()


def mask_loss(logits: Tensor, targets: Tensor, weights: Tensor) -> Tensor:
    """Weighted 2-class cross-entropy normalised by the total weight (the original code's mask loss)."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    total, weight = weighted_ce(logits, targets, weights)
    return total / weight.clamp(min=1e-6)


def _axis_weights(lo: Tensor, hi: Tensor, box_lo: Tensor, box_hi: Tensor, cells: int, count: int, scale: float) -> Tensor:
    """Tensor[N, count, cells]: bilinear weights (border-clamped) of each output pixel on one axis.

    Output pixel ``j`` sits at network-input coordinate ``(j + 0.5) * scale``; the map's
    ``cells`` cover ``[lo, hi]``. Rows of pixels outside ``[box_lo, box_hi)`` are zero.
    """
    device = lo.device
    centres = (torch.arange(count, device=device, dtype=torch.float32) + 0.5) * scale  # [count]
    source = (centres[None] - lo[:, None]) / (hi - lo)[:, None] * cells - 0.5  # [N, count] in cells
    source = source.clamp(0.0, cells - 1.0)
    first = source.floor().long().clamp(max=cells - 1)
    frac = source - first
    second = (first + 1).clamp(max=cells - 1)
    inside = ((centres[None] >= box_lo[:, None]) & (centres[None] < box_hi[:, None])).float()
    weights = torch.zeros((lo.shape[0], count, cells), device=device, dtype=torch.float32)
    weights.scatter_add_(2, first[..., None], ((1.0 - frac) * inside)[..., None])
    weights.scatter_add_(2, second[..., None], (frac * inside)[..., None])
    return weights


def paste_masks(
    probs: Tensor, windows: Tensor, boxes: Tensor, scale: tuple[float, float], out_size: tuple[int, int]
) -> Tensor:
    """Paste per-instance probability maps into the original image frame.

    Bilinear resampling of an axis-aligned map is separable, so each paste is two
    small batched matrix products ``Ry @ P @ Rx^T`` whose weight matrices also
    carry the box crop (zero rows outside the box).

    Args:
        probs: Tensor[N, 1, h, w] foreground probabilities covering ``windows``.
        windows: Tensor[N, 4] (x1, y1, x2, y2) extent of each map, in network-input pixels.
        boxes: Tensor[N, 4] instance boxes in network-input pixels; outside them the result is 0.
        scale: (sx, sy) network-input pixels per original pixel.
        out_size: (H, W) of the original image.

    Returns:
        Tensor[N, H, W] probabilities (bilinear inside the window, 0 outside the box).
    """
    n = probs.shape[0]
    height, width = out_size
    if n == 0:
        return probs.new_zeros((0, height, width), dtype=torch.float32)
    sx, sy = scale
    h, w = probs.shape[-2:]
    windows, boxes = windows.float(), boxes.float()
    rows = _axis_weights(windows[:, 1], windows[:, 3], boxes[:, 1], boxes[:, 3], h, height, sy)  # [N, H, h]
    cols = _axis_weights(windows[:, 0], windows[:, 2], boxes[:, 0], boxes[:, 2], w, width, sx)  # [N, W, w]
    return torch.bmm(torch.bmm(rows, probs[:, 0].float()), cols.transpose(1, 2))
