"""Trivial proxy labels from image tags alone: the floor any cue must clear in the VOC pseudo-label protocol.

* ``whole-image``: every pixel takes the image's tag;
* ``centre-box``: the middle half of each side (:func:`pipeline.cues.saliency_iou.centre_box`)
  takes the tag, the rest is background.

Both need a single tag. A multi-tag image gets an all-ignore (255) label: a tag-only rule
cannot say which class is where, and ``wsss score`` refuses a missing prediction (it would
flatter the score), so the image is written and scored as unlabelled (a miss in ``mIoU``,
background in ``mIoU_ignore_as_background``). An image without a tag (``wsss voc-tags``
leaves those out of its table) is all background. Labels are written as ``wsss proxy-labels``
writes them: VOC-palette PNGs at the image's size, ``OUT/<image path>.png``, atomically.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from pipeline.classes import CLASS_INDEX, IGNORE_INDEX
from pipeline.cues.saliency_iou import centre_box
from pipeline.datasets.imagenet import KeywordEntry, read_keyword_table
from pipeline.datasets.voc import VOCSegmentation, write_voc_label
from pipeline.proxy_labels.manifest import label_relpath
from s4net.errors import DatasetError
from s4net.io.images import read_image_size

log = logging.getLogger(__name__)

KINDS = ("whole-image", "centre-box")


def baseline_label(kind: str, tags: Sequence[str], height: int, width: int) -> np.ndarray:
    """uint8[H, W] label of one image from its ``tags`` (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"unknown baseline {kind!r}; expected one of {list(KINDS)}")
    if len(tags) > 1:
        return np.full((height, width), IGNORE_INDEX, dtype=np.uint8)
    labels = np.zeros((height, width), dtype=np.uint8)
    if tags:
        labels[centre_box(height, width) if kind == "centre-box" else slice(None)] = CLASS_INDEX[tags[0]]
    return labels


def _entries(voc_root: Path, tags: Path, ids: str | os.PathLike | None) -> list[KeywordEntry]:
    """The table's entries, or one per listed id (an id the table lacks: no tag)."""
    images = voc_root / "JPEGImages"
    table = read_keyword_table(tags, root=images)
    if ids is None:
        return table
    by_stem = {Path(entry.image).stem: entry for entry in table}
    dataset = VOCSegmentation(voc_root, ids_file=ids)
    return [by_stem.get(i) or KeywordEntry(dataset.image_path(i).relative_to(images).as_posix(), ())
            for i in dataset.ids]


def write_baseline_labels(kind: str, voc_root: str | os.PathLike, tags: str | os.PathLike, out: str | os.PathLike,
                          ids: str | os.PathLike | None = None, progress: bool = True) -> dict[str, int]:
    """Write one ``kind`` label per image of the tag table (or of ``ids``) under ``out``; returns counts of
    ``labelled`` (single tag), ``ignored`` (several tags: all 255) and ``untagged`` (all background) images."""
    if kind not in KINDS:
        raise ValueError(f"unknown baseline {kind!r}; expected one of {list(KINDS)}")
    voc_root, out = Path(voc_root), Path(out)
    if not voc_root.is_dir():
        raise DatasetError(voc_root, "VOC root is not a directory (expected the VOC2012 folder)")
    counts = {"labelled": 0, "ignored": 0, "untagged": 0}
    for entry in tqdm(_entries(voc_root, Path(tags), ids), desc=f"baseline {kind}", disable=not progress):
        width, height = read_image_size(voc_root / "JPEGImages" / entry.image)
        write_voc_label(out / label_relpath(entry.image), baseline_label(kind, entry.keywords, height, width))
        counts["labelled" if len(entry.keywords) == 1 else "ignored" if entry.keywords else "untagged"] += 1
    if counts["untagged"]:
        log.warning("%d listed images have no tag in %s: labelled all background", counts["untagged"], tags)
    log.info("%s: %s", kind, counts)
    return counts
