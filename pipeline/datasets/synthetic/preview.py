"""Contact sheet of the generated world, read back through the real readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.classes import VOC_CLASSES, voc_palette
from pipeline.datasets.imagenet import ImageNetSubset
from pipeline.datasets.voc import VOCSegmentation, read_voc_label
from s4net.data.coco import SalientInstanceDataset
from s4net.io.images import save_image

TILE = 160


def _overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend label colours over an image; label 0 stays as the image, edges drawn solid."""
    colours = palette[labels].astype(np.float64)
    blended = image.astype(np.float64)
    foreground = labels > 0
    blended[foreground] = (1 - alpha) * blended[foreground] + alpha * colours[foreground]
    edge = np.zeros(labels.shape, dtype=bool)
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    blended[edge] = colours[edge]
    return blended.astype(np.uint8)


def _tile(pixels: np.ndarray, caption: str) -> Image.Image:
    image = Image.fromarray(pixels).resize((TILE, TILE), Image.NEAREST)
    ImageDraw.Draw(image).text((3, 2), caption, fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
    return image


def _spread(indices: list[int], count: int) -> list[int]:
    """Up to ``count`` entries evenly spaced through ``indices`` (so several classes show)."""
    if len(indices) <= count:
        return indices
    return [indices[round(k * (len(indices) - 1) / max(count - 1, 1))] for k in range(count)]


def contact_sheet(world: Path, per_row: int = 6) -> Path:
    """Write ``world/preview/contact_sheet.png``: salient instances (one colour each;
    the caption has ``o`` per occluded and ``.`` per unoccluded instance), ImageNet-like images with their keywords
    and true class masks, VOC-like images with class labels and the void band (cream).
    Each row shows a pair per sample: the image as stored, then the overlay."""
    palette = np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)
    rows: list[list[Image.Image]] = []

    salient = SalientInstanceDataset(world / "salient" / "train.json", world / "salient" / "images")
    row = []
    for sample in (salient[i] for i in range(min(per_row, len(salient)))):
        ids = np.zeros(sample.image.shape[:2], dtype=np.uint8)
        for k, mask in enumerate(sample.masks):
            ids[mask > 0] = k + 1
        marks = "".join("o" if occ else "." for occ in sample.occluded)
        row += [_tile(sample.image, sample.file_name[-10:-4]),
                _tile(_overlay(sample.image, ids, palette), f"inst {marks}")]
    rows.append(row)

    imagenet = ImageNetSubset(world / "imagenet", world / "imagenet" / "keywords.csv")
    multi = _spread([i for i, e in enumerate(imagenet.entries) if len(e.keywords) > 1], per_row // 2)
    single = _spread([i for i, e in enumerate(imagenet.entries) if len(e.keywords) == 1], per_row - len(multi))
    row = []
    for index in single + multi:
        sample = imagenet[index]
        mask_path = world / "imagenet" / "masks" / Path(sample.image_id).with_suffix(".png")
        labels = read_voc_label(mask_path)
        row += [_tile(sample.image, Path(sample.image_id).parent.name),
                _tile(_overlay(sample.image, labels, palette), " ".join(sample.keywords))]
    rows.append(row)

    voc = VOCSegmentation(world / "voc" / "VOC2012", split="val")
    row = []
    for sample in (voc[i] for i in range(min(per_row, len(voc)))):
        names = sorted({int(c) for c in np.unique(sample.label) if 0 < c < 255})
        row += [_tile(sample.image, sample.image_id),
                _tile(_overlay(sample.image, sample.label, palette), " ".join(VOC_CLASSES[c] for c in names))]
    rows.append(row)

    width = max(len(r) for r in rows) * TILE
    sheet = Image.new("RGB", (width, len(rows) * TILE), (40, 40, 40))
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            sheet.paste(tile, (c * TILE, r * TILE))
    out = world / "preview" / "contact_sheet.png"
    save_image(out, np.asarray(sheet))
    return out
