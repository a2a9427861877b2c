"""YOLO-seg instance labels (Ultralytics' ``coco128-seg`` layout) read and rasterised to binary masks.

Each ``labels/<stem>.txt`` holds one instance per line, ``class x1 y1 x2 y2 ...``: a
COCO-80 class id (0..79, the order of Ultralytics' ``coco.yaml``, i.e. COCO's 80 category
names in category-id order) and one polygon with coordinates normalised to [0, 1] by the
image's width and height.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from s4net.errors import DatasetError

COCO80_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)

# COCO name -> PASCAL VOC name of the 20 classes the two share
COCO_TO_VOC: dict[str, str] = {
    "airplane": "aeroplane", "bicycle": "bicycle", "bird": "bird", "boat": "boat", "bottle": "bottle",
    "bus": "bus", "car": "car", "cat": "cat", "chair": "chair", "cow": "cow", "dining table": "diningtable",
    "dog": "dog", "horse": "horse", "motorcycle": "motorbike", "person": "person", "potted plant": "pottedplant",
    "sheep": "sheep", "couch": "sofa", "train": "train", "tv": "tvmonitor",
}
# COCO-80 id -> VOC name: 0 person, 1 bicycle, 2 car, 3 motorbike, 4 aeroplane, 5 bus, 6 train, 8 boat, 14 bird,
# 15 cat, 16 dog, 17 horse, 18 sheep, 19 cow, 39 bottle, 56 chair, 57 sofa, 58 pottedplant, 60 diningtable,
# 62 tvmonitor
VOC_CLASS_IDS: dict[int, str] = {i: COCO_TO_VOC[name] for i, name in enumerate(COCO80_CLASSES) if name in COCO_TO_VOC}


@dataclass(frozen=True)
class YoloInstance:
    """One label line: its COCO-80 ``class_id`` and polygon ``float64[P, 2]`` (x, y normalised to [0, 1])."""

    class_id: int
    polygon: np.ndarray


def read_yolo_seg(path: str | os.PathLike) -> list[YoloInstance]:
    """The instances of one YOLO-seg label file; a malformed line is a :class:`DatasetError` naming file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(path, f"cannot read the YOLO-seg labels ({exc.__class__.__name__})") from None
    instances = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            class_id, coords = int(fields[0]), np.asarray([float(v) for v in fields[1:]], dtype=np.float64)
        except ValueError:
            raise DatasetError(path, f"line {number}: expected 'class x1 y1 x2 y2 ...' numbers") from None
        if not 0 <= class_id < len(COCO80_CLASSES):
            raise DatasetError(path, f"line {number}: class {class_id} is not a COCO-80 id (0..79)")
        if coords.size < 6 or coords.size % 2:
            raise DatasetError(path, f"line {number}: a polygon needs an even number (>= 6) of coordinates, "
                                     f"got {coords.size}")
        if coords.min() < -0.01 or coords.max() > 1.01:
            raise DatasetError(path, f"line {number}: coordinates outside [0, 1]; YOLO-seg ones are normalised")
        instances.append(YoloInstance(class_id, coords.reshape(-1, 2)))
    return instances


def rasterise_polygon(polygon: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8[H, W] mask of a normalised polygon ``[P, 2]``, filled as COCO fills polygon segmentations."""
    pixels = (np.clip(polygon, 0.0, 1.0) * np.array([width, height], dtype=np.float64)).ravel().tolist()
    rles = mask_utils.frPyObjects([pixels], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(np.uint8)
