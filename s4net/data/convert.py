"""Instance-id PNGs (ILSO, VOC ``SegmentationObject``) -> COCO salient-instance json."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from s4net.data.coco import SALIENT_CATEGORY, coco_document, encode_mask, mask_box
from s4net.errors import DatasetError
from s4net.io.atomic import write_json
from s4net.io.images import IMAGE_EXTENSIONS, load_instance_png, read_image_size

log = logging.getLogger(__name__)

VOID = 255


def boxes_overlap(boxes: np.ndarray) -> np.ndarray:
    """For COCO boxes ``float[N, 4]`` (x, y, w, h): bool[N], True where a box meets another with positive area."""
    if len(boxes) < 2:
        return np.zeros(len(boxes), dtype=bool)
    x1, y1 = boxes[:, 0], boxes[:, 1]
    x2, y2 = x1 + boxes[:, 2], y1 + boxes[:, 3]
    inter_w = np.minimum(x2[:, None], x2[None, :]) - np.maximum(x1[:, None], x1[None, :])
    inter_h = np.minimum(y2[:, None], y2[None, :]) - np.maximum(y1[:, None], y1[None, :])
    overlap = (inter_w > 0) & (inter_h > 0)
    np.fill_diagonal(overlap, False)
    return overlap.any(axis=1)


def _find_image(images_dir: Path, stem: str, by_stem: dict[str, Path]) -> Path:
    path = by_stem.get(stem)
    if path is None:
        raise DatasetError(images_dir, f"no image named {stem}.* for mask {stem}.png")
    return path


def mask_annotations(masks: Sequence[np.ndarray], image_id: int, first_ann_id: int) -> list[dict[str, Any]]:
    """COCO annotations (RLE, tight box, area) of one image's binary instance masks ``uint8[H, W]`` each.

    ``occluded`` is True when the instance's box overlaps another's: the usual proxy
    when the depth order is unknown.
    """
    boxes = np.asarray([mask_box(m) for m in masks], dtype=np.float64).reshape(-1, 4)
    occluded = boxes_overlap(boxes)
    annotations = []
    for offset, (mask, box, occ) in enumerate(zip(masks, boxes, occluded, strict=True)):
        annotations.append(
            {
                "id": first_ann_id + offset,
                "image_id": image_id,
                "category_id": SALIENT_CATEGORY["id"],
                "segmentation": encode_mask(mask),
                "area": int(mask.sum()),
                "bbox": [float(v) for v in box],
                "iscrowd": 0,
                "occluded": bool(occ),
            }
        )
    return annotations


def instance_annotations(instance_ids: np.ndarray, image_id: int, first_ann_id: int) -> list[dict[str, Any]]:
    """COCO annotations for one instance-id map (0 background, 255 void, k instance k); see :func:`mask_annotations`."""
    ids = [int(k) for k in np.unique(instance_ids) if k not in (0, VOID)]
    return mask_annotations([(instance_ids == k).astype(np.uint8) for k in ids], image_id, first_ann_id)


def convert_instance_masks(
    images_dir: str | os.PathLike,
    masks_dir: str | os.PathLike,
    out_json: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Turn every ``<stem>.png`` in ``masks_dir`` into COCO annotations for ``images_dir/<stem>.*``.

    Masks are index PNGs (0 background, k instance k, 255 void) or colour-coded RGB
    (one colour per instance). Image ids follow the sorted mask names. Raises
    :class:`DatasetError` naming the file for a missing image or a size mismatch.
    Writes ``out_json`` atomically when given and returns the document.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise DatasetError(folder, "not a directory")
    mask_paths = sorted(p for p in masks_dir.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))
    if not mask_paths:
        raise DatasetError(masks_dir, "no .png instance masks found")
    by_stem: dict[str, Path] = {}
    for path in sorted(images_dir.iterdir()):
        if path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith("."):
            by_stem.setdefault(path.stem, path)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, mask_path in enumerate(tqdm(mask_paths, desc="convert-masks", disable=not progress), start=1):
        image_path = _find_image(images_dir, mask_path.stem, by_stem)
        width, height = read_image_size(image_path)
        instance_ids = load_instance_png(mask_path)
        if instance_ids.shape != (height, width):
            raise DatasetError(
                mask_path,
                f"mask is {instance_ids.shape[1]}x{instance_ids.shape[0]} but its image {image_path.name} is "
                f"{width}x{height}",
            )
        images.append({"id": image_id, "file_name": image_path.name, "width": width, "height": height})
        annotations.extend(instance_annotations(instance_ids, image_id, len(annotations) + 1))
    document = coco_document(images, annotations, description=f"converted from {masks_dir.name}")
    log.info("converted %d masks, %d instances", len(images), len(annotations))
    if out_json is not None:
        write_json(out_json, document)
    return document
