"""How the segmentation branch's spatial layers pad their inputs.

The branch is written once (``SegmentationBranch._layers``) against a *padding*:
an object that runs each spatial layer (``padding(x, conv)``, a 3x3 stride-1
max-pool when ``conv`` is None).

* :class:`SamePadding` is the network's own: zeros for convs, -inf for the
  max-pools.
* :class:`WindowPadding` runs the branch on a window per instance (see
  :func:`s4net.models.windows.exact_spans`) and pads each layer with what the
  whole map would hold there: the layer's *background* (what it holds on an
  all-zero map, which is what it holds wherever its receptive field has no masked
  feature) or, past the map's border, the network's padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s4net.models.windows import Windows


def max3x3(padded: Tensor) -> Tensor:
    """3x3 stride-1 max over an already padded Tensor[..., h + 2, w + 2] -> [..., h, w].

    Separable (rows, then columns): on CPU many times faster than ``max_pool2d``,
    which also computes indices, and exactly equal to it.
    """
    rows = torch.maximum(torch.maximum(padded[..., :-2, :], padded[..., 1:-1, :]), padded[..., 2:, :])
    return torch.maximum(torch.maximum(rows[..., :-2], rows[..., 1:-1]), rows[..., 2:])


def half_width(conv: nn.Conv2d | None) -> int:
    """Cells a layer reads on each side: 1 for the 3x3 max-pool, ``dilation * (k // 2)`` for a conv."""
    return 1 if conv is None else conv.dilation[0] * (conv.kernel_size[0] // 2)


class SamePadding:
    """The network's own padding: zeros for convs, -inf for the max-pool."""

    def __call__(self, x: Tensor, conv: nn.Conv2d | None) -> Tensor:
        if conv is None:
            if torch.is_grad_enabled() and x.requires_grad:  # same values; its gradient goes to one cell on ties
                return F.max_pool2d(x, 3, stride=1, padding=1)
            return max3x3(F.pad(x, (1, 1, 1, 1), value=float("-inf")))
        return conv(x)


def fold(position: Tensor, size: int, radius: int) -> Tensor:
    """Map positions on a ``size`` axis to the background map of ``SegmentationBranch.background``.

    The background only depends on how far a place is from the border, up to the
    branch's receptive ``radius``; places further in all read the middle cell.
    """
    span = min(size, 2 * radius + 1)
    folded = torch.where(position >= size - radius, position - size + span, position.clamp(max=radius))
    return folded.clamp(0, span - 1)


class WindowPadding:
    """Pads every layer of the branch on windows as if the rest of the map were there.

    Inside an instance's own span the layer reads its own values; past the map's
    border, the network's padding (0, or -inf for the max-pool); anywhere else
    (past the own span, on the shared canvas or around it) the layer's background
    at that place of the map. Exact on the box and one cell around it when the
    spans come from :func:`s4net.models.windows.exact_spans`.

    Args:
        windows: the canvases and each instance's own span.
        background: per spatial layer in order, Tensor[C, th, tw] its input on an all-zero map.
        radius: the branch's receptive radius (what ``background`` was folded with).

    Each padded input is one row gather from a table of the layer's cells, the
    background cells and the padding value (channels last, so every row is one
    contiguous copy).
    """

    def __init__(self, windows: Windows, background: list[Tensor], radius: int) -> None:
        self.windows = windows
        self.background = iter(background)
        self.radius = radius
        self.rows: dict[tuple[int, int, int], Tensor] = {}

    def _rows(self, k: int, field_size: tuple[int, int]) -> Tensor:
        """Tensor[N * (h + 2k) * (w + 2k)] long: each padded cell's row in [cells; background; padding]."""
        key = (k, *field_size)
        if key not in self.rows:
            win = self.windows
            device = win.origin.device
            n = win.origin.shape[0]
            h, w = win.size
            fh, fw = field_size
            xs = torch.arange(-k, w + k, device=device)[None]  # canvas columns
            ys = torch.arange(-k, h + k, device=device)[None]
            inside = ((ys >= win.own_lo[:, 1:]) & (ys < win.own_hi[:, 1:]))[:, :, None] & (
                (xs >= win.own_lo[:, :1]) & (xs < win.own_hi[:, :1])
            )[:, None, :]
            map_x, map_y = xs + win.origin[:, :1], ys + win.origin[:, 1:]  # [N, w + 2k], [N, h + 2k]
            map_h, map_w = win.map_size
            beyond = ((map_y < 0) | (map_y >= map_h))[:, :, None] | ((map_x < 0) | (map_x >= map_w))[:, None, :]
            cells = n * h * w
            own = ((torch.arange(n, device=device)[:, None, None] * h + ys.clamp(0, h - 1)[:, :, None]) * w
                   + xs.clamp(0, w - 1)[:, None, :])
            back = (cells + fold(map_y, map_h, self.radius)[:, :, None] * fw
                    + fold(map_x, map_w, self.radius)[:, None, :])
            rows = torch.where(beyond, cells + fh * fw, torch.where(inside, own, back))
            self.rows[key] = rows.reshape(-1)
        return self.rows[key]

    def __call__(self, x: Tensor, conv: nn.Conv2d | None) -> Tensor:
        k = half_width(conv)
        n, c, h, w = x.shape
        field = next(self.background).to(x.dtype)  # [C, th, tw]
        rows = self._rows(k, (field.shape[1], field.shape[2]))
        table = torch.cat([
            x.permute(0, 2, 3, 1).reshape(-1, c),
            field.permute(1, 2, 0).reshape(-1, c),
            x.new_full((1, c), float("-inf") if conv is None else 0.0),
        ])
        padded = table.index_select(0, rows).view(n, h + 2 * k, w + 2 * k, c).permute(0, 3, 1, 2)
        if conv is None:
            return max3x3(padded)
        return F.conv2d(padded, conv.weight, conv.bias, dilation=conv.dilation)
