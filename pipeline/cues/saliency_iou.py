"""Salient-object IoU: S4Net's class-agnostic saliency (or a fixed prior) against binary saliency masks.

For each photo, the IoU between a predicted foreground and the ground-truth mask
(``masks/<id>.png``, foreground where the grey value is above 127, as SOD's mode-``1``
masks read), and the mean over the photos. Predictions:

* ``s4net``: the saliency cue's map (:func:`pipeline.cues.saliency.saliency_map`, the union of
  the instances scoring at least ``score_threshold``) cut at ``foreground``;
* the ``centre-box`` prior: the middle half of each side, pixels whose centre lies in
  x in [W/4, 3W/4], y in [H/4, 3H/4].

An empty prediction against an empty mask scores 1 (they agree); SOD masks are never empty.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from tqdm import tqdm

from pipeline.cues.keyword_assignment import AssignmentConfig
from pipeline.cues.saliency import saliency_map
from pipeline.datasets.voc import read_id_list
from s4net.errors import DatasetError
from s4net.io.atomic import write_json
from s4net.io.images import IMAGE_EXTENSIONS, load_label_png, read_image_size

log = logging.getLogger(__name__)

PRIORS = ("centre-box",)


@dataclass(frozen=True)
class SaliencyCut:
    """How S4Net's detections become a binary saliency map: instances scoring at least ``score_threshold``,
    pixels where their strongest mask probability reaches ``foreground`` (the cues' defaults)."""

    score_threshold: float = AssignmentConfig().score_threshold
    foreground: float = 0.5

    def __post_init__(self) -> None:
        for name in ("score_threshold", "foreground"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SaliencyCut.{name}={getattr(self, name)} must be in [0, 1]")


def centre_box(height: int, width: int) -> np.ndarray:
    """bool[H, W]: the middle half of each side (pixel centres in [W/4, 3W/4] x [H/4, 3H/4])."""
    rows, cols = np.arange(height) + 0.5, np.arange(width) + 0.5
    inside_rows = (rows >= height / 4) & (rows <= 3 * height / 4)
    inside_cols = (cols >= width / 4) & (cols <= 3 * width / 4)
    return inside_rows[:, None] & inside_cols[None, :]


def mask_iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two bool[H, W] masks; 1.0 when both are empty."""
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} and mask {truth.shape} differ in size")
    union = np.count_nonzero(prediction | truth)
    return 1.0 if union == 0 else np.count_nonzero(prediction & truth) / union


def read_binary_mask(path: str | os.PathLike) -> np.ndarray:
    """bool[H, W]: a binary saliency mask (mode ``1``, ``L`` or palette), foreground above 127."""
    return load_label_png(path) > 127


def find_image(folder: Path, image_id: str) -> Path:
    """``folder/<id>.<ext>`` for the first image extension present; a :class:`DatasetError` otherwise."""
    for extension in IMAGE_EXTENSIONS:
        path = folder / f"{image_id}{extension}"
        if path.is_file():
            return path
    raise DatasetError(folder, f"no image named {image_id}.* for mask {image_id}.png")


def photo_ids(masks: Path, ids: str | os.PathLike | None) -> list[str]:
    """The listed ids, or the stem of every ``masks/*.png`` (sorted)."""
    if not masks.is_dir():
        raise DatasetError(masks, "not a directory of saliency masks")
    found = read_id_list(ids) if ids is not None else sorted(p.stem for p in masks.glob("*.png"))
    if not found:
        raise DatasetError(masks, "holds no .png masks")
    return found


def _s4net_predictions(checkpoint: Path, items: list[tuple[str, Path]], cut: SaliencyCut, device: Any,
                       batch_size: int, amp: bool, progress: bool) -> Iterator[tuple[str, np.ndarray]]:
    from s4net.checkpoint import load_checkpoint
    from s4net.inference import inference_autocast, run_detector

    model = load_checkpoint(checkpoint, map_location=device).for_inference(min_score=min(cut.score_threshold, 0.999))
    assignment = AssignmentConfig(score_threshold=cut.score_threshold)
    skipped: list[dict[str, Any]] = []
    for det in run_detector(model, items, batch_size, device, progress, total=len(items), skipped=skipped,
                            desc="sod-iou", autocast=inference_autocast(device, amp)):
        yield det.key, saliency_map(det, assignment) >= cut.foreground
    if skipped:
        raise DatasetError(skipped[0]["image"], skipped[0]["reason"])


def _prior_predictions(items: list[tuple[str, Path]], progress: bool) -> Iterator[tuple[str, np.ndarray]]:
    for key, path in tqdm(items, desc="sod-iou centre-box", disable=not progress):
        width, height = read_image_size(path)
        yield key, centre_box(height, width)


def sod_iou(images: str | os.PathLike, masks: str | os.PathLike, out: str | os.PathLike,
            ids: str | os.PathLike | None = None, checkpoint: str | os.PathLike | None = None,
            prior: str | None = None, cut: SaliencyCut = SaliencyCut(), device: Any = "cpu", batch_size: int = 4,
            amp: bool = True, progress: bool = True) -> dict[str, Any]:
    """Score S4Net (``checkpoint``) or a ``prior`` on ``images/<id>.*`` against ``masks/<id>.png``; write the
    summary (mean IoU, per-photo rows) to ``out`` atomically and return it."""
    if (checkpoint is None) == (prior is None):
        raise ValueError("give either an S4Net checkpoint or a prior")
    if prior is not None and prior not in PRIORS:
        raise ValueError(f"unknown prior {prior!r}; expected one of {list(PRIORS)}")
    images, masks = Path(images), Path(masks)
    if not images.is_dir():
        raise DatasetError(images, "not a directory of images")
    items = [(image_id, find_image(images, image_id)) for image_id in photo_ids(masks, ids)]
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise DatasetError(checkpoint, "no such S4Net checkpoint")
    predictions = (_prior_predictions(items, progress) if prior is not None
                   else _s4net_predictions(Path(checkpoint), items, cut, device, batch_size, amp, progress))
    rows = []
    for image_id, predicted in predictions:
        truth = read_binary_mask(masks / f"{image_id}.png")
        if truth.shape != predicted.shape:
            raise DatasetError(masks / f"{image_id}.png", f"mask is {truth.shape[1]}x{truth.shape[0]} but its image "
                                                          f"is {predicted.shape[1]}x{predicted.shape[0]}")
        rows.append({"id": image_id, "iou": round(mask_iou(predicted, truth), 6),
                     "predicted_fraction": round(float(predicted.mean()), 6),
                     "mask_fraction": round(float(truth.mean()), 6)})
    summary = {
        "prediction": "s4net" if prior is None else prior,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "settings": asdict(cut) if prior is None else {"box": "x in [W/4, 3W/4], y in [H/4, 3H/4]"},
        "images": len(rows),
        "mean_iou": float(np.mean([r["iou"] for r in rows])),
        "rows": rows,
    }
    write_json(out, summary, indent=2)
    log.info("%s: mean IoU %.4f on %d photos", summary["prediction"], summary["mean_iou"], len(rows))
    return summary

