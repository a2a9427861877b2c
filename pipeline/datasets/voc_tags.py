"""Image-level tags of a VOC split: the only supervision of the field's pseudo-label protocol.

WSSS papers score pseudo labels of PASCAL VOC 2012 *train* (1,464 images) whose only
input is each image's set of classes. Two sources give that set:

* ``xml``: the detection annotations ``Annotations/<id>.xml``, every ``object/name``
  that is a VOC class. Objects marked ``difficult`` count, as in the field's tag files
  (PSA's and IRN's ``make_cls_labels`` read every object name); ``skip_difficult`` drops
  them. Part names (``head``, ``hand``) sit under ``object/part`` and are not read.
* ``masks``: the classes present in ``SegmentationClass/<id>.png`` (values 1..20; the
  255 void band is not a class).

``auto`` takes the XML of every image when each has one, else the masks of all (one
source per table, so a split is never tagged half one way and half the other).
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.classes import CLASS_INDEX, NUM_CLASSES, VOC_CLASSES
from pipeline.datasets.imagenet import KeywordEntry
from pipeline.datasets.voc import VOCSegmentation
from s4net.errors import DatasetError

log = logging.getLogger(__name__)
TAG_SOURCES = ("auto", "xml", "masks")


@dataclass(frozen=True)
class VocTags:
    """A split's keyword entries (image paths relative to ``JPEGImages``) and how they were made."""

    entries: list[KeywordEntry]
    source: str  # "xml" or "masks"
    untagged: list[str]  # ids with no VOC class (left out of the table)


def tags_from_xml(path: str | os.PathLike, skip_difficult: bool = False) -> tuple[str, ...]:
    """VOC classes of the objects in one annotation file, in class order."""
    path = Path(path)
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as exc:
        raise DatasetError(path, f"cannot read the annotation XML ({exc})") from None
    found: set[str] = set()
    for item in root.findall("object"):
        name = (item.findtext("name") or "").strip()
        if name not in CLASS_INDEX or name == "background":
            if name:
                log.debug("%s: object %r is not a VOC class; not a tag", path, name)
            continue
        if skip_difficult and (item.findtext("difficult") or "0").strip() == "1":
            continue
        found.add(name)
    return tuple(sorted(found, key=CLASS_INDEX.__getitem__))


def tags_from_mask(labels: np.ndarray) -> tuple[str, ...]:
    """VOC classes present in a ``SegmentationClass`` label (background and void are not tags)."""
    present = np.unique(labels)
    return tuple(VOC_CLASSES[int(v)] for v in present if 0 < int(v) < NUM_CLASSES)


def voc_split_tags(voc_root: str | os.PathLike, split: str = "train", ids_file: str | os.PathLike | None = None,
                   source: str = "auto", skip_difficult: bool = False) -> VocTags:
    """Tags of every image of a VOC split (``ImageSets/Segmentation/<split>.txt``, or ``ids_file``)."""
    if source not in TAG_SOURCES:
        raise ValueError(f"tag source {source!r}: expected one of {list(TAG_SOURCES)}")
    dataset = VOCSegmentation(voc_root, split, ids_file=ids_file)
    xml_dir = dataset.root / "Annotations"
    if source == "auto":
        source = "xml" if all((xml_dir / f"{i}.xml").is_file() for i in dataset.ids) else "masks"
    entries: list[KeywordEntry] = []
    untagged: list[str] = []
    images = dataset.root / "JPEGImages"
    for image_id in dataset.ids:
        if source == "xml":
            tags = tags_from_xml(xml_dir / f"{image_id}.xml", skip_difficult)
        else:
            tags = tags_from_mask(dataset.label(image_id))
        if not tags:
            untagged.append(image_id)
            continue
        entries.append(KeywordEntry(dataset.image_path(image_id).relative_to(images).as_posix(), tags))
    return VocTags(entries, source, untagged)

