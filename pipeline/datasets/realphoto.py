"""A small real-photo salient-instance set (COCO json) from the sample data in ``shared/realdata``.

Three sources become class-agnostic salient instances (see ``realdata/SOURCES.md``):

* ``sod_bsds_saliency40``: each binary SOD mask (mode ``1``, foreground where ``.convert('L') > 127``)
  split into 8-connected components, one instance each; components smaller than
  ``min_component`` of the image (default 0.5%, the rule ``index.csv`` counts with) are
  specks and are dropped (their pixels become background). A seeded hold-out of these
  photos, stratified over single- and multi-component masks, stays out of training: it
  is ``val.json`` (for ``s4net evaluate``) and ``heldout_sod.txt`` (for ``wsss sod-iou``).
* ``coco_val2017_icevision6``: every COCO instance of every category is salient; ``iscrowd``
  ones are kept as crowd (``iscrowd: 1``), which the reader drops from training as COCO does.
* ``coco128seg_voc``: YOLO-seg polygons of the 20 VOC classes only, rasterised at the image size;
  other classes are left out (their pixels are background), as are images left without one.

``occluded`` comes from box overlap (:func:`s4net.data.convert.mask_annotations`). VOC
images are the test set: the VOC folders are never read and a training file named like
a VOC id (``20xx_xxxxxx``) is an error. ``file_name`` entries are relative to the
realdata folder, so ``s4net train --images REALDATA`` reads them in place (nothing is copied).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from pipeline.datasets.yolo_seg import VOC_CLASS_IDS, rasterise_polygon, read_yolo_seg
from s4net.data.coco import SalientInstanceDataset, coco_document, encode_mask, mask_box
from s4net.data.convert import boxes_overlap, mask_annotations
from s4net.errors import DatasetError
from s4net.io.atomic import atomic_write_text, write_json
from s4net.io.images import load_label_png, read_image_size

log = logging.getLogger(__name__)

SOD, COCO_VAL, COCO128 = "sod_bsds_saliency40", "coco_val2017_icevision6", "coco128seg_voc"
SOURCES = (SOD, COCO_VAL, COCO128)
VOC_ID = re.compile(r"20\d\d_\d{6}")
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class RealPhotoConfig:
    """Settings of the builder.

    Attributes:
        holdout_sod: SOD photos kept out of training (the salient-object IoU set and ``val.json``).
        seed: picks the hold-out.
        min_component: SOD mask components below this fraction of the image are dropped.
    """

    holdout_sod: int = 10
    seed: int = 0
    min_component: float = 0.005

    def __post_init__(self) -> None:
        if self.holdout_sod < 0:
            raise ValueError(f"holdout_sod={self.holdout_sod} must be >= 0")
        if not 0.0 <= self.min_component < 1.0:
            raise ValueError(f"min_component={self.min_component} must be in [0, 1)")


@dataclass
class Photo:
    """One image's instances before ids are given: binary masks ``uint8[H, W]`` and crowd masks."""

    source: str
    name: str
    width: int
    height: int
    masks: list[np.ndarray]
    crowd: list[np.ndarray] = field(default_factory=list)

    @property
    def file_name(self) -> str:
        """Path relative to the realdata folder."""
        return f"{self.source}/images/{self.name}"


def mask_components(foreground: np.ndarray, min_fraction: float) -> list[np.ndarray]:
    """uint8[H, W] masks of the 8-connected components of ``foreground`` (bool[H, W]) covering at least
    ``min_fraction`` of the image, in raster order of their first pixel."""
    labels, count = ndimage.label(foreground, structure=EIGHT_CONNECTED)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = [k for k in range(1, count + 1) if sizes[k] >= min_fraction * foreground.size]
    return [(labels == k).astype(np.uint8) for k in keep]


def read_sod(folder: Path, min_fraction: float, progress: bool = True) -> list[Photo]:
    """Every ``masks/<id>.png`` of the SOD folder with ``images/<id>.jpg``, split into components (sorted ids)."""
    masks_dir = folder / "masks"
    if not masks_dir.is_dir():
        raise DatasetError(masks_dir, "not a directory (expected the SOD masks)")
    photos = []
    for mask_path in tqdm(sorted(masks_dir.glob("*.png")), desc="sod masks", disable=not progress):
        image_path = folder / "images" / f"{mask_path.stem}.jpg"
        width, height = read_image_size(image_path)
        foreground = load_label_png(mask_path) > 127
        if foreground.shape != (height, width):
            raise DatasetError(mask_path, f"mask is {foreground.shape[1]}x{foreground.shape[0]} but its image is "
                                          f"{width}x{height}")
        photos.append(Photo(SOD, image_path.name, width, height, mask_components(foreground, min_fraction)))
    if not photos:
        raise DatasetError(masks_dir, "holds no .png masks")
    return photos


def choose_holdout(components: dict[str, int], count: int, seed: int) -> list[str]:
    """``count`` ids (sorted) drawn with ``seed``, split between single- and multi-component photos in
    proportion to their numbers (largest remainder); ``components`` maps id -> component count."""
    if count > len(components):
        raise ValueError(f"cannot hold out {count} of {len(components)} SOD photos")
    strata = [sorted(i for i, n in components.items() if n == 1), sorted(i for i, n in components.items() if n > 1)]
    exact = [count * len(s) / len(components) for s in strata]
    quotas = [int(q) for q in exact]
    for index in sorted(range(len(strata)), key=lambda i: quotas[i] - exact[i])[: count - sum(quotas)]:
        quotas[index] += 1
    rng = np.random.default_rng(seed)
    chosen = [ids[j] for ids, quota in zip(strata, quotas, strict=True) for j in rng.permutation(len(ids))[:quota]]
    return sorted(chosen)


def read_coco_val(folder: Path) -> Iterator[Photo]:
    """Every image of the COCO json with instances: all categories salient, ``iscrowd`` ones as crowd."""
    dataset = SalientInstanceDataset(folder / "annotations.json", folder / "images", category=None,
                                     include_crowd=True)
    for sample in dataset:
        crowd = [bool(dataset.coco.anns[int(a)].get("iscrowd", 0)) for a in sample.annotation_ids]
        masks = [m for m, c in zip(sample.masks, crowd, strict=True) if not c]
        height, width = sample.image.shape[:2]
        yield Photo(COCO_VAL, Path(sample.file_name).name, width, height, masks,
                    [m for m, c in zip(sample.masks, crowd, strict=True) if c])


def read_coco128(folder: Path, counts: dict[str, int]) -> Iterator[Photo]:
    """Every ``images/<stem>.jpg`` with its ``labels/<stem>.txt`` polygons of VOC classes, rasterised;
    ``counts`` gathers the instances of other classes and empty ones left out."""
    for image_path in sorted((folder / "images").glob("*.jpg")):
        label_path = folder / "labels" / f"{image_path.stem}.txt"
        instances = read_yolo_seg(label_path) if label_path.is_file() else []
        width, height = read_image_size(image_path)
        masks = []
        for instance in instances:
            if instance.class_id not in VOC_CLASS_IDS:
                counts["not_voc_instances"] += 1
                continue
            mask = rasterise_polygon(instance.polygon, width, height)
            if not mask.any():
                counts["empty_instances"] += 1
                continue
            masks.append(mask)
        yield Photo(COCO128, image_path.name, width, height, masks)


def check_not_voc(photos: Sequence[Photo], root: Path) -> None:
    """Refuse any photo named like a VOC image (``20xx_xxxxxx``): VOC is the test set."""
    for photo in photos:
        if VOC_ID.fullmatch(Path(photo.name).stem):
            raise DatasetError(root / photo.file_name, "is named like a VOC image; VOC images are the test set and "
                                                       "must stay out of the salient-instance data")


def photo_document(photos: Sequence[Photo], description: str) -> dict[str, Any]:
    """A COCO salient-instance document of ``photos`` (image ids 1.. in order, annotation ids 1..)."""
    images, annotations = [], []
    for image_id, photo in enumerate(photos, start=1):
        images.append({"id": image_id, "file_name": photo.file_name, "width": photo.width, "height": photo.height})
        annotations.extend(mask_annotations(photo.masks, image_id, len(annotations) + 1))
        for mask in photo.crowd:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "segmentation": encode_mask(mask), "area": int(mask.sum()), "bbox": mask_box(mask),
                                "iscrowd": 1, "occluded": False})
    return coco_document(images, annotations, description=description)


def _source_counts(photos: Sequence[Photo]) -> dict[str, int]:
    return {"images": len(photos), "instances": sum(len(p.masks) for p in photos),
            "crowd": sum(len(p.crowd) for p in photos)}


def build_realphoto(realdata: str | os.PathLike, out: str | os.PathLike, config: RealPhotoConfig = RealPhotoConfig(),
                    progress: bool = True) -> dict[str, Any]:
    """Write ``OUT/train.json``, ``OUT/val.json`` (the held-out SOD photos), ``OUT/heldout_sod.txt`` and
    ``OUT/summary.json`` (counts per source, the hold-out, per-photo SOD components); returns the summary."""
    root, out = Path(realdata), Path(out)
    for folder in (root, *(root / s for s in SOURCES)):
        if not folder.is_dir():
            raise DatasetError(folder, "not a directory (expected the realdata folder of SOURCES.md)")
    sod = read_sod(root / SOD, config.min_component, progress)
    empty = [p.name for p in sod if not p.masks]
    if empty:
        log.warning("%d SOD photos have no component of at least %.2f%% and are left out, e.g. %s", len(empty),
                    100 * config.min_component, empty[0])
    sod = [p for p in sod if p.masks]
    try:
        held = set(choose_holdout({Path(p.name).stem: len(p.masks) for p in sod}, config.holdout_sod, config.seed))
    except ValueError as exc:
        raise DatasetError(root / SOD, str(exc)) from None
    coco_all = list(read_coco_val(root / COCO_VAL))
    coco = [p for p in coco_all if p.masks]
    dropped: dict[str, int] = {"not_voc_instances": 0, "empty_instances": 0}
    coco128_all = list(tqdm(read_coco128(root / COCO128, dropped), desc="coco128 polygons", disable=not progress))
    coco128 = [p for p in coco128_all if p.masks]
    train_sod = [p for p in sod if Path(p.name).stem not in held]
    val_sod = [p for p in sod if Path(p.name).stem in held]
    train = [*train_sod, *coco, *coco128]
    check_not_voc([*train, *val_sod], root)
    write_json(out / "train.json", photo_document(train, "real-photo salient instances (train)"))
    write_json(out / "val.json", photo_document(val_sod, "real-photo salient instances (held-out SOD photos)"))
    atomic_write_text(out / "heldout_sod.txt", "".join(f"{i}\n" for i in sorted(held)))
    summary = {
        "realdata": str(root.resolve()),
        "settings": {"holdout_sod": config.holdout_sod, "seed": config.seed, "min_component": config.min_component},
        "sources": {
            SOD: {**_source_counts(train_sod), "held_out_images": len(val_sod),
                  "held_out_instances": sum(len(p.masks) for p in val_sod), "without_components": len(empty)},
            COCO_VAL: {**_source_counts(coco), "images_without_instance": len(coco_all) - len(coco)},
            COCO128: {**_source_counts(coco128), "images_without_voc_instance": len(coco128_all) - len(coco128),
                      **dropped},
        },
        "train": {**_source_counts(train), "occluded": _occluded(train)},
        "val": {**_source_counts(val_sod), "occluded": _occluded(val_sod)},
        "heldout_sod": sorted(held),
        "sod_photos": [{"id": Path(p.name).stem, "components": len(p.masks),
                        "kept_fg_fraction": round(float(sum(m.sum() for m in p.masks)) / (p.width * p.height), 4),
                        "held_out": Path(p.name).stem in held} for p in sod],
        "files": ["train.json", "val.json", "heldout_sod.txt", "summary.json"],
    }
    write_json(out / "summary.json", summary, indent=2)
    for name, counts in summary["sources"].items():
        log.info("%s: %d training images, %d instances", name, counts["images"], counts["instances"])
    return summary


def _occluded(photos: Sequence[Photo]) -> int:
    """Instances whose box overlaps another's in the same photo (the ``occluded`` flag's count)."""
    return int(sum(boxes_overlap(np.asarray([mask_box(m) for m in p.masks]).reshape(-1, 4)).sum() for p in photos))
