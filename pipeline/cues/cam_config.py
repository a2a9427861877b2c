"""The CAM classifier's settings and backbones (no torch here: the ``wsss`` parser reads them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# efficientnet_lite0 (timm's tf_efficientnet_lite0, dilated to stride 16) is a deviation from the paper's ResNets
CAM_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "efficientnet_lite0")


@dataclass(frozen=True)
class CamConfig:
    """The CAM classifier and how it is trained.

    Attributes:
        backbone: a ResNet, or ``efficientnet_lite0`` (not the paper's); its last stage runs at stride 16
            instead of 32 (finer maps).
        size: images are resized to ``size`` x ``size`` for training and for the maps.
        iterations, batch_size, lr, momentum, weight_decay: SGD with the poly schedule (power 0.9).
        holdout: fraction of images kept out of training to report keyword accuracy (0: none).
        seed: initialisation, order, flips and the hold-out split.
    """

    backbone: str = "resnet18"
    size: int = 160
    iterations: int = 1500
    batch_size: int = 16
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    holdout: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.backbone not in CAM_BACKBONES:
            raise ValueError(f"CamConfig.backbone={self.backbone!r}; expected one of {list(CAM_BACKBONES)}")
        if self.size < 32 or self.iterations < 1 or self.batch_size < 1 or self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("CamConfig needs size >= 32, iterations >= 1, batch_size >= 1, lr > 0, weight_decay >= 0; "
                             f"got {self}")
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"CamConfig.holdout={self.holdout} must be in [0, 1)")

    def model_fields(self) -> dict[str, Any]:
        """What a saved model needs to be rebuilt (the training schedule aside)."""
        return {"backbone": self.backbone, "size": self.size}
