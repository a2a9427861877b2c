"""PASCAL VOC 2012 segmentation in the devkit layout.

``root`` is the ``VOC2012`` folder: ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png``
(VOC palette: 0 background, 1..20 classes, 255 void band along object borders),
``SegmentationObject/<id>.png`` (instance ids, 255 void) and
``ImageSets/Segmentation/<split>.txt`` (one id per line).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline.classes import IGNORE_INDEX, NUM_CLASSES, voc_palette
from s4net.errors import DatasetError
from s4net.io.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, load_label_png, load_rgb, save_label_png

_VALID_LABELS = np.zeros(256, dtype=bool)
_VALID_LABELS[:NUM_CLASSES] = True
_VALID_LABELS[IGNORE_INDEX] = True


@dataclass(frozen=True)
class VOCSample:
    """One VOC image: ``image`` uint8[H, W, 3], ``label`` uint8[H, W] (255 void)."""

    image_id: str
    image: np.ndarray
    label: np.ndarray


def read_id_list(path: str | os.PathLike) -> list[str]:
    """Image ids from an ``ImageSets`` list (one per line; blank lines and BOM ignored)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(path, "no such id list") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(path, f"cannot read ({exc.__class__.__name__})") from None
    ids: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        image_id = line.strip().split()[0] if line.strip() else ""
        if not image_id:
            continue
        if "/" in image_id or "\\" in image_id or image_id in (".", ".."):
            raise DatasetError(path, f"line {number}: id {image_id!r} must be a bare file stem")
        if image_id in seen:
            raise DatasetError(path, f"line {number}: duplicate id {image_id!r}")
        seen.add(image_id)
        ids.append(image_id)
    if not ids:
        raise DatasetError(path, "id list is empty")
    return ids


def read_voc_label(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A ``SegmentationClass``-style PNG as uint8[H, W]: 0..20, 255 void.

    Palette and grayscale index PNGs are read as they are; colour-coded RGB ones
    through the VOC palette. Values outside 0..20 and 255 are an error.
    """
    labels = load_label_png(path, palette=voc_palette(), max_pixels=max_pixels)
    bad = np.unique(labels[~_VALID_LABELS[labels]])
    if bad.size:
        raise DatasetError(path, f"label values {bad.tolist()[:8]} are not VOC classes (0-20) or void (255)")
    return labels


def write_voc_label(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write uint8[H, W] class indices as a VOC-palette PNG, atomically."""
    save_label_png(path, labels, voc_palette())


class VOCSegmentation:
    """Image ids, images and class labels of one split of a VOC 2012-layout folder.

    Args:
        root: the ``VOC2012`` folder.
        split: name of the list in ``ImageSets/Segmentation`` (``train``, ``val``, ...).
        ids_file: read ids from this file instead of the split list.
        max_pixels: refuse larger images before decoding.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val",
        ids_file: str | os.PathLike | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(self.root, "VOC root is not a directory (expected the VOC2012 folder)")
        self.split = split
        self.max_pixels = max_pixels
        list_path = Path(ids_file) if ids_file else self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        self.ids = read_id_list(list_path)

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[VOCSample]:
        for index in range(len(self)):
            yield self[index]

    def image_path(self, image_id: str) -> Path:
        """``JPEGImages/<id>.jpg``, or the same stem with another image extension."""
        folder = self.root / "JPEGImages"
        preferred = folder / f"{image_id}.jpg"
        if preferred.exists():
            return preferred
        for extension in IMAGE_EXTENSIONS:
            candidate = folder / f"{image_id}{extension}"
            if candidate.exists():
                return candidate
        raise DatasetError(preferred, f"no image for id {image_id!r} in {folder}")

    def label_path(self, image_id: str) -> Path:
        """``SegmentationClass/<id>.png``."""
        return self.root / "SegmentationClass" / f"{image_id}.png"

    def instance_path(self, image_id: str) -> Path:
        """``SegmentationObject/<id>.png``."""
        return self.root / "SegmentationObject" / f"{image_id}.png"

    def image(self, image_id: str) -> np.ndarray:
        """uint8[H, W, 3] RGB."""
        return load_rgb(self.image_path(image_id), max_pixels=self.max_pixels)

    def label(self, image_id: str) -> np.ndarray:
        """uint8[H, W] class indices, 255 void."""
        return read_voc_label(self.label_path(image_id), max_pixels=self.max_pixels)

    def instances(self, image_id: str) -> np.ndarray:
        """uint8[H, W] instance ids (0 background, 255 void)."""
        return load_label_png(self.instance_path(image_id), max_pixels=self.max_pixels)

    def __getitem__(self, index: int) -> VOCSample:
        image_id = self.ids[index]
        image = self.image(image_id)
        label = self.label(image_id)
        if label.shape != image.shape[:2]:
            raise DatasetError(
                self.label_path(image_id),
                f"label is {label.shape[1]}x{label.shape[0]} but its image is {image.shape[1]}x{image.shape[0]}",
            )
        return VOCSample(image_id=image_id, image=image, label=label)


def label_overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """uint8[H, W, 3]: the image blended with the labels' VOC colours (background left as is)."""
    palette = np.asarray(voc_palette(), dtype=np.float32).reshape(256, 3)
    colours = palette[labels]
    blend = np.where((labels == 0)[..., None], image.astype(np.float32), (1 - alpha) * image + alpha * colours)
    return np.clip(blend, 0, 255).astype(np.uint8)
