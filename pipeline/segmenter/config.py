"""Which DeepLab to build (no torch here: the ``wsss`` parser reads it)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.classes import NUM_CLASSES

ARCHITECTURES = ("deeplabv3plus", "deeplabv3")


@dataclass(frozen=True)
class SegmenterConfig:
    """Which DeepLab to build.

    Attributes:
        arch: ``deeplabv3plus`` or ``deeplabv3``.
        encoder: a segmentation-models-pytorch encoder name (``resnet101``, ``resnet18``, ...), or
            ``efficientnet_lite0`` (smp's ``tu-tf_efficientnet_lite0``; not the paper's encoder).
        classes: output classes (21 for VOC: background and 20 objects).
    """

    arch: str = "deeplabv3plus"
    encoder: str = "resnet101"
    classes: int = NUM_CLASSES

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown segmenter architecture {self.arch!r}; expected one of {list(ARCHITECTURES)}")
        if self.classes < 2:
            raise ValueError(f"SegmenterConfig.classes={self.classes} must be >= 2")
