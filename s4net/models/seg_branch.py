"""The segmentation branch ("salient instance discriminator", Fan et al., Sec. 3.5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s4net.models.region_padding import SamePadding, WindowPadding, half_width
from s4net.models.windows import Windows


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

    def forward(self, x: Tensor, padding: SamePadding | WindowPadding | None = None) -> Tensor:
        """Tensor[N, cin, h, w] -> Tensor[N, cout, h, w]; ``padding`` runs the convs (see :mod:`region_padding`)."""
        padding = padding or SamePadding()
        branch = F.relu(padding(F.relu(padding(x, self.conv1)), self.conv2))
        return branch + (x if self.project is None else self.project(x))


class _Recorder(SamePadding):
    """SamePadding that notes each spatial layer and its input (for tracing the branch)."""

    def __init__(self) -> None:
        self.layers: list[tuple[Tensor, nn.Conv2d | None]] = []

    def __call__(self, x: Tensor, conv: nn.Conv2d | None) -> Tensor:
        self.layers.append((x, conv))
        return super().__call__(x, conv)


class SegmentationBranch(nn.Module):
    """maxpool 3x3/1 -> residual(c1) -> maxpool 3x3/1 -> dilated conv(c2, d=2) -> residual(c2) -> 2-class logits.

    Every conv is 3x3, stride 1, so the output keeps the input's resolution
    (stride 8). ``reach`` is the half-width of each spatial layer in order, and
    ``receptive_radius`` their sum: how many cells an output cell sees on each side.
    """

    def __init__(self, in_channels: int, channels: tuple[int, int] = (128, 64)) -> None:
        super().__init__()
        c1, c2 = channels
        self.res1 = ResidualBlock(in_channels, c1)
        self.dilated = _conv(c1, c2, dilation=2)
        self.res2 = ResidualBlock(c2, c2)
        self.logits = nn.Conv2d(c2, 2, 3, padding=1)
        nn.init.normal_(self.logits.weight, std=0.001)
        nn.init.zeros_(self.logits.bias)
        self.in_channels = in_channels
        with torch.no_grad():
            self.reach = tuple(half_width(conv) for _, conv in self._trace(torch.zeros((1, in_channels, 1, 1))))
        self._background_cache: tuple[tuple | None, list[Tensor]] = (None, [])
        self.receptive_radius = sum(self.reach)

    def _layers(self, x: Tensor, padding: SamePadding | WindowPadding) -> Tensor:
        x = padding(x, None)
        x = self.res1(x, padding)
        x = padding(x, None)
        x = F.relu(padding(x, self.dilated))
        x = self.res2(x, padding)
        return padding(x, self.logits)

    def _trace(self, x: Tensor) -> list[tuple[Tensor, nn.Conv2d | None]]:
        """Each spatial layer (None for the max-pools) with its input, run on ``x``."""
        recorder = _Recorder()
        self._layers(x, recorder)
        return recorder.layers

    def background(self, map_size: tuple[int, int]) -> list[Tensor]:
        """Tensor[C, th, tw] per spatial layer (in order): its input on an all-zero map.

        Computed on a map of at most ``2 * receptive_radius + 1`` cells a side, which
        holds every distinct value (see :func:`s4net.models.region_padding.fold`).
        Without autograd the result is kept until a parameter changes (their version
        counters are part of the key; parameters made under ``torch.inference_mode``
        have none, so are not cached) or the autocast state changes (a background
        computed in bfloat16 must not pad a float32 run).
        """
        th, tw = (min(s, 2 * self.receptive_radius + 1) for s in map_size)
        weight = self.logits.weight
        params = list(self.parameters())
        cacheable = not torch.is_grad_enabled() and not any(p.is_inference() for p in params)  # those keep no versions
        device_type = weight.device.type
        autocast = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
        key = ((th, tw, weight.dtype, weight.device, autocast, tuple((p.data_ptr(), p._version) for p in params))
               if cacheable else None)
        if key is not None and self._background_cache[0] == key:
            return self._background_cache[1]
        seen = [x[0] for x, _ in self._trace(weight.new_zeros((1, self.in_channels, th, tw)))]
        if key is not None:
            self._background_cache = (key, seen)
        return seen

    def forward(self, x: Tensor, windows: Windows | None = None, background: list[Tensor] | None = None) -> Tensor:
        """Tensor[N, C, h, w] masked features -> Tensor[N, 2, h, w] background/foreground logits.

        Without ``windows`` every layer pads with zeros (-inf for the max-pools); with
        them, each instance runs as on its own span of the whole map (see
        :class:`~s4net.models.region_padding.WindowPadding`). ``background`` may pass
        :meth:`background` in when several calls share it.
        """
        if windows is None:
            return self._layers(x, SamePadding())
        if background is None:
            background = self.background(windows.map_size)
        return self._layers(x, WindowPadding(windows, background, self.receptive_radius))


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


def _axis_weights(lo: Tensor, hi: Tensor, box_lo: Tensor, box_hi: Tensor, cells: int, count: int,
                  scale: float) -> Tensor:
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
        Tensor[N, H, W] float32 probabilities (bilinear inside the window, 0 outside the box), computed in
        float32 under any autocast.
    """
    n = probs.shape[0]
    height, width = out_size
    if n == 0:
        return probs.new_zeros((0, height, width), dtype=torch.float32)
    sx, sy = scale
    h, w = probs.shape[-2:]
    windows, boxes = windows.float(), boxes.float()
    with torch.autocast(probs.device.type, enabled=False):  # float32 whatever autocast the caller runs under
        rows = _axis_weights(windows[:, 1], windows[:, 3], boxes[:, 1], boxes[:, 3], h, height, sy)  # [N, H, h]
        cols = _axis_weights(windows[:, 0], windows[:, 2], boxes[:, 0], boxes[:, 2], w, width, sx)  # [N, W, w]
        return torch.bmm(torch.bmm(rows, probs[:, 0].float()), cols.transpose(1, 2))
