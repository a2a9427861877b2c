"""The real-photo run's summary: VOC pseudo labels by labeller, salient-object IoU, S4Net mAP, and a label sheet.

Inputs are the files the run's jobs wrote: the pseudo-label table JSON (``wsss pseudo-label-table``),
``wsss sod-iou`` JSON per model, ``s4net evaluate`` JSON, and the label folders of each labeller. The
sheet sets each VOC image beside its truth and every labeller's proxy labels, in small tiles.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from pipeline.datasets.voc import label_overlay, read_voc_label
from s4net.io.images import load_rgb

log = logging.getLogger(__name__)

TILE_HEIGHT = 96
HEADER = 28
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPEG", ".JPG", ".PNG")


def find_voc_image(images: Path, image_id: str) -> Path:
    """``images/<id>.<ext>`` for the first extension present (VOC copies hold some images as PNG)."""
    for suffix in IMAGE_SUFFIXES:
        path = images / f"{image_id}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"{images}: no image for id {image_id}")


def _tile(picture: np.ndarray) -> Image.Image:
    image = Image.fromarray(picture)
    width = max(1, round(image.width * TILE_HEIGHT / image.height))
    return image.resize((width, TILE_HEIGHT), Image.BILINEAR)


def label_sheet(voc_root: Path, ids: Sequence[str], labels: Mapping[str, Path]) -> Image.Image:
    """One row per VOC id: the image, its truth, then each labeller's labels over the image.

    A labeller without a label for an image (e.g. a baseline that skips multi-tag images) shows
    the bare image under a grey veil.
    """
    columns = ["image", "truth", *labels]
    rows: list[list[Image.Image]] = []
    for image_id in ids:
        image = load_rgb(find_voc_image(voc_root / "JPEGImages", image_id))
        truth = read_voc_label(voc_root / "SegmentationClass" / f"{image_id}.png")
        row = [_tile(image), _tile(label_overlay(image, truth))]
        for folder in labels.values():
            path = Path(folder) / f"{image_id}.png"
            if path.is_file():
                row.append(_tile(label_overlay(image, read_voc_label(path))))
            else:
                row.append(_tile((image.astype(np.float32) * 0.35 + 90).astype(np.uint8)))
        rows.append(row)
    widths = [max(row[c].width for row in rows) for c in range(len(columns))]
    sheet = Image.new("RGB", (sum(widths) + 2 * len(widths), HEADER + len(rows) * (TILE_HEIGHT + 2)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    x = 0
    for c, name in enumerate(columns):
        draw.text((x + 2, 2), name.replace("_", " ")[:28], fill=(0, 0, 0))
        for r, row in enumerate(rows):
            sheet.paste(row[c], (x, HEADER + r * (TILE_HEIGHT + 2)))
        x += widths[c] + 2
    return sheet


MODEL_TITLES = {"lite0": "S4Net-Lite0 (real photos)", "baseline": "baseline S4Net"}
CUE_TITLES = {"instances": "instances", "saliency": "saliency", "cam_saliency": "trained CAM + saliency",
              "imagenet_cam_saliency": "ImageNet CAM + saliency"}
OTHER_TITLES = {"imagenet_cam": "ImageNet CAM alone (no training)",
                "whole_image": "trivial: whole image as its tag (single-tag images)",
                "centre_box": "trivial: centred box as its tag (single-tag images)",
                "centre_box_prior": "centred-box prior", "s4net_lite0": MODEL_TITLES["lite0"],
                "s4net_baseline": MODEL_TITLES["baseline"]}


def title(name: str) -> str:
    """A reader's label for a labeller (``MODEL/cue`` or a plain name) or a salient-object source."""
    model, _, cue = name.rpartition("/")
    if model:
        return f"{MODEL_TITLES.get(model, model)}: {CUE_TITLES.get(cue, cue)}"
    return OTHER_TITLES.get(name, name)


def realphoto_summary(scores: Mapping[str, dict[str, Any]], sod: Mapping[str, dict[str, Any]],
                      s4net_metrics: Mapping[str, dict[str, Any]], data: dict[str, Any] | None = None,
                      runtimes: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """One JSON of the run: VOC pseudo-label rows by labeller (``wsss score`` json each), salient-object IoU
    per source (``wsss sod-iou`` json each), S4Net's mAP (``s4net evaluate`` json each), the training set's
    counts (``wsss realphoto-data``'s summary) and the jobs' wall times (Snakemake benchmarks)."""
    keep = ("images", "coverage", "mIoU", "mIoU_ignore_as_background", "mIoU_labelled", "mean_precision",
            "mean_recall", "per_class_iou")
    rows = [{"labeller": name, "title": title(name), **{k: s.get(k) for k in keep}} for name, s in scores.items()]
    return {
        "voc_pseudo_labels": {"rows": rows},
        "salient_object_iou": {name: {"title": title(name), "mean_iou": s.get("mean_iou"), "images": s.get("images")}
                               for name, s in sod.items()},
        "s4net": dict(s4net_metrics),
        "training_set": None if data is None else {key: data.get(key) for key in ("sources", "train", "val",
                                                                                  "heldout_sod", "settings")},
        "runtimes": {"jobs": list(runtimes), "total_job_seconds": round(sum(r["seconds"] for r in runtimes), 1)},
    }


def markdown_table(summary: dict[str, Any]) -> str:
    """The VOC and SOD tables of :func:`realphoto_summary` as Markdown."""
    lines = ["| labeller | mIoU (255 as bg) | mIoU (miss) | coverage | precision | recall |",
             "|---|---|---|---|---|---|"]

    def pct(value: float | None) -> str:
        return "" if value is None else f"{100 * value:.1f}"

    for row in summary["voc_pseudo_labels"]["rows"]:
        lines.append(f"| {row['title']} | {pct(row['mIoU_ignore_as_background'])} | {pct(row['mIoU'])} | "
                     f"{pct(row['coverage'])} | {pct(row['mean_precision'])} | {pct(row['mean_recall'])} |")
    lines += ["", "| model | salient-object IoU | photos |", "|---|---|---|"]
    for row in summary["salient_object_iou"].values():
        lines.append(f"| {row['title']} | {pct(row['mean_iou'])} | {row['images']} |")
    return "\n".join(lines) + "\n"
