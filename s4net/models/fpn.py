"""Feature pyramid (Lin et al., FPN) over C2..C5, with P6 pooled from P5."""

from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn


class FeaturePyramid(nn.Module):
    """Top-down pyramid with lateral 1x1 and output 3x3 convs, no activation.

    Args:
        in_channels: channels of C2..C5.
        channels: channels of every output level (256).
        levels: ``"p3-p6"`` (paper) or ``"p2-p6"`` (original code).
        upsample: ``"nearest"`` or ``"bilinear"`` (original code).
        p6_pool: ``"avg"`` (original code: 2x2 average pool of P5) or ``"max"``.

    ``forward`` takes ``{"c2".."c5"}`` and returns ``{"p3".."p6"}`` (or from ``p2``).
    """

    def __init__(
        self,
        in_channels: list[int],
        channels: int = 256,
        levels: str = "p3-p6",
        upsample: str = "nearest",
        p6_pool: str = "avg",
    ) -> None:
        super().__init__()
        self.first = 2 if levels == "p2-p6" else 3
        used = in_channels[self.first - 2 :]
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in used)
        self.output = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in used)
        self.upsample = upsample
        self.p6_pool = p6_pool
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, a=1)
                nn.init.zeros_(module.bias)

    def forward(self, features: "OrderedDict[str, Tensor]") -> "OrderedDict[str, Tensor]":
        inputs = [features[f"c{level}"] for level in range(self.first, 6)]
        merged = self.lateral[-1](inputs[-1])
        outputs = [self.output[-1](merged)]
        for index in range(len(inputs) - 2, -1, -1):
            lateral = self.lateral[index](inputs[index])
            kwargs = {"align_corners": False} if self.upsample == "bilinear" else {}
            merged = lateral + F.interpolate(merged, size=lateral.shape[-2:], mode=self.upsample, **kwargs)
            outputs.insert(0, self.output[index](merged))
        pool = F.avg_pool2d if self.p6_pool == "avg" else F.max_pool2d
        p5 = outputs[-1]
        outputs.append(pool(p5, kernel_size=2, stride=2, ceil_mode=True))
        return OrderedDict((f"p{level}", x) for level, x in zip(range(self.first, 7), outputs, strict=True))
