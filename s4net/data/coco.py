"""COCO instance json for salient instances: reading (pycocotools) and writing.

The format is COCO's own: ``images``, ``annotations`` (polygon or RLE
``segmentation``, ``bbox`` as ``[x, y, w, h]``, ``iscrowd``) and ``categories``,
with one category named ``salient`` and an optional boolean ``occluded`` per
annotation. Reading keeps instances of the chosen category (every category when
``category=None``, so any COCO file can be read class-agnostically).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from s4net.errors import DatasetError
from s4net.io.images import DEFAULT_MAX_PIXELS, load_rgb
from s4net.io.paths import resolve_inside

log = logging.getLogger(__name__)

SALIENT_CATEGORY = {"id": 1, "name": "salient", "supercategory": "salient"}


@dataclass(frozen=True)
class SalientSample:
    """One image with its salient instances.

    Attributes:
        image_id: COCO image id.
        file_name: path relative to the image folder.
        image: uint8[H, W, 3] RGB.
        boxes: float32[N, 4] (x1, y1, x2, y2) in pixels, clipped to the image.
        masks: uint8[N, H, W] binary instance masks.
        occluded: bool[N] from the annotation's ``occluded`` flag (False when absent).
        annotation_ids: int64[N] COCO annotation ids.
    """

    image_id: int
    file_name: str
    image: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray
    occluded: np.ndarray
    annotation_ids: np.ndarray


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Binary ``[H, W]`` mask -> compressed COCO RLE with ``counts`` as an ASCII string."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def mask_box(mask: np.ndarray) -> list[float]:
    """Tight COCO box ``[x, y, w, h]`` of a non-empty binary mask (pixel edges)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])]


def coco_document(
    images: Sequence[dict[str, Any]],
    annotations: Sequence[dict[str, Any]],
    categories: Sequence[dict[str, Any]] = (SALIENT_CATEGORY,),
    description: str = "salient instances",
) -> dict[str, Any]:
    """Assemble a COCO instance document (no timestamps, so output is reproducible)."""
    return {
        "info": {"description": description, "version": "1.0"},
        "licenses": [],
        "images": list(images),
        "annotations": list(annotations),
        "categories": list(categories),
    }


def _load_document(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(path, "no such file") from None
    except (PermissionError, IsADirectoryError, UnicodeDecodeError) as exc:
        raise DatasetError(path, f"cannot read ({exc.__class__.__name__})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(path, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(document, dict):
        raise DatasetError(path, "top level is not a JSON object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(document.get(key), list):
            raise DatasetError(path, f"missing or non-list key {key!r} (COCO needs images, annotations, categories)")
    return document


def _check_document(path: Path, document: dict[str, Any]) -> None:
    for index, entry in enumerate(document["images"]):
        for key in ("id", "file_name", "width", "height"):
            if key not in entry:
                raise DatasetError(path, f"images[{index}] lacks {key!r}")
    image_ids = {entry["id"] for entry in document["images"]}
    for index, ann in enumerate(document["annotations"]):
        for key in ("id", "image_id", "category_id", "segmentation"):
            if key not in ann:
                raise DatasetError(path, f"annotations[{index}] lacks {key!r}")
        if ann["image_id"] not in image_ids:
            raise DatasetError(path, f"annotation {ann['id']} refers to unknown image_id {ann['image_id']}")


class SalientInstanceDataset:
    """Salient instances from a COCO json and an image folder, read with pycocotools.

    Args:
        annotation_file: COCO instance json.
        image_dir: folder that ``file_name`` entries are relative to; a name that
            resolves outside it is an error.
        category: category name to keep (``None`` keeps every category).
        include_crowd: keep ``iscrowd`` annotations (default: drop them, as COCO does).
        max_pixels: refuse images whose declared size exceeds this.
    """

    def __init__(
        self,
        annotation_file: str | os.PathLike,
        image_dir: str | os.PathLike,
        category: str | None = "salient",
        include_crowd: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.annotation_file = Path(annotation_file)
        self.image_dir = Path(image_dir)
        self.max_pixels = max_pixels
        self.include_crowd = include_crowd
        document = _load_document(self.annotation_file)
        _check_document(self.annotation_file, document)
        self.coco = COCO()
        self.coco.dataset = document
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco.createIndex()
        if category is None:
            self.category_ids = sorted(self.coco.getCatIds())
        else:
            self.category_ids = self.coco.getCatIds(catNms=[category])
            if not self.category_ids:
                names = sorted(c["name"] for c in document["categories"])
                raise DatasetError(self.annotation_file, f"no category named {category!r}; it has {names}")
        self.image_ids = sorted(self.coco.getImgIds())

    def __len__(self) -> int:
        return len(self.image_ids)

    def __iter__(self) -> Iterator[SalientSample]:
        for index in range(len(self)):
            yield self[index]

    def annotations(self, image_id: int) -> list[dict[str, Any]]:
        """The kept annotations of one image, in annotation-id order."""
        ann_ids = self.coco.getAnnIds(imgIds=[image_id], catIds=self.category_ids)
        anns = self.coco.loadAnns(sorted(ann_ids))
        return [a for a in anns if self.include_crowd or not a.get("iscrowd", 0)]

    def image_path(self, image_id: int) -> Path:
        """Absolute path of an image, refusing names that escape ``image_dir``."""
        entry = self.coco.imgs[image_id]
        return resolve_inside(self.image_dir, entry["file_name"], source=self.annotation_file)

    def __getitem__(self, index: int) -> SalientSample:
        image_id = self.image_ids[index]
        entry = self.coco.imgs[image_id]
        path = self.image_path(image_id)
        image = load_rgb(path, max_pixels=self.max_pixels)
        height, width = image.shape[:2]
        if (entry["width"], entry["height"]) != (width, height):
            raise DatasetError(
                path,
                f"image is {width}x{height} but {self.annotation_file.name} says {entry['width']}x{entry['height']}",
            )
        masks, boxes, occluded, ann_ids = [], [], [], []
        for ann in self.annotations(image_id):
            mask = self._decode(ann, height, width)
            if not mask.any():
                log.warning("%s: annotation %s has an empty mask inside the image; skipped", self.annotation_file,
                            ann["id"])
                continue
            masks.append(mask)
            boxes.append(self._box(ann, mask, width, height))
            occluded.append(bool(ann.get("occluded", False)))
            ann_ids.append(int(ann["id"]))
        return SalientSample(
            image_id=int(image_id),
            file_name=str(entry["file_name"]),
            image=image,
            boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            masks=np.asarray(masks, dtype=np.uint8).reshape(-1, height, width),
            occluded=np.asarray(occluded, dtype=bool),
            annotation_ids=np.asarray(ann_ids, dtype=np.int64),
        )

    def _decode(self, ann: dict[str, Any], height: int, width: int) -> np.ndarray:
        segmentation = ann["segmentation"]
        if isinstance(segmentation, dict):
            size = list(segmentation.get("size", []))
            if size != [height, width]:
                raise DatasetError(
                    self.annotation_file,
                    f"annotation {ann['id']}: RLE size {size} differs from its image ({height}x{width})",
                )
        try:
            rle = self.coco.annToRLE(ann)
            return mask_utils.decode(rle).astype(np.uint8)
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise DatasetError(self.annotation_file,
                               f"annotation {ann['id']}: unreadable segmentation ({exc})") from None

    @staticmethod
    def _box(ann: dict[str, Any], mask: np.ndarray, width: int, height: int) -> list[float]:
        x, y, w, h = ann.get("bbox") or mask_box(mask)
        x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
        x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
        if x2 <= x1 or y2 <= y1:
            x, y, w, h = mask_box(mask)
            x1, y1, x2, y2 = x, y, x + w, y + h
        return [x1, y1, x2, y2]
