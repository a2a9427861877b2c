"""PASCAL VOC 2012 classes and the VOC colour palette."""

from __future__ import annotations

VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane", "bicycle", "bird", "boat", "bottle",
    "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
FOREGROUND_CLASSES: tuple[str, ...] = VOC_CLASSES[1:]
NUM_CLASSES = len(VOC_CLASSES)  # 21 with background
IGNORE_INDEX = 255
CLASS_INDEX: dict[str, int] = {name: index for index, name in enumerate(VOC_CLASSES)}


def voc_palette() -> list[int]:
    """The 256-entry VOC palette as a flat ``[r0, g0, b0, r1, ...]`` list.

    Entry ``i`` spreads the bits of ``i`` over the three channels, high bits first,
    as the VOC devkit does; index 255 comes out as (224, 224, 192), the void colour.
    """
    palette: list[int] = []
    for index in range(256):
        red = green = blue = 0
        value = index
        for shift in range(7, -1, -1):
            red |= ((value >> 0) & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        palette += [red, green, blue]
    return palette


def class_index(name: str) -> int:
    """Index of a foreground VOC class name; ``ValueError`` listing the valid ones otherwise."""
    index = CLASS_INDEX.get(name)
    if index is None or index == 0:
        raise ValueError(f"unknown VOC class {name!r}; expected one of {', '.join(FOREGROUND_CLASSES)}")
    return index
