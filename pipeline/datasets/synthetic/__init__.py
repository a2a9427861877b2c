"""A deterministic synthetic "salient world" in the real dataset formats (COCO, ImageNet, VOC)."""

from pipeline.datasets.synthetic.world import SCALES, WorldScale, generate_world

__all__ = ["SCALES", "WorldScale", "generate_world"]
