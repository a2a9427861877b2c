"""S4Net model parts: backbones, FPN, detection branch, RoIMasking, segmentation branch."""

from s4net.models.s4net import S4Net

__all__ = ["S4Net"]
