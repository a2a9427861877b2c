"""Semantic segmentation scores: one dataset-level confusion matrix, mIoU over the 21 VOC classes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from pipeline.classes import IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES
from s4net.errors import DatasetError


def confusion_matrix(prediction: np.ndarray, target: np.ndarray, classes: int = NUM_CLASSES) -> np.ndarray:
    """int64[classes, classes + 1] counts: rows the target class, columns the predicted one.

    Target 255 is skipped. The last column counts target pixels predicted as 255
    (unlabelled, as proxy labels leave unsure pixels): they lower the target class's
    IoU as misses without counting for any predicted class.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {prediction.shape} and target {target.shape} differ in shape")
    target = target.astype(np.int64).ravel()
    prediction = prediction.astype(np.int64).ravel()
    valid = (target != IGNORE_INDEX) & (target < classes)
    known = valid & (prediction < classes)
    counts = np.bincount(classes * target[known] + prediction[known], minlength=classes * classes)
    missed = np.bincount(target[valid & ~known], minlength=classes)[:classes]
    return np.concatenate([counts.reshape(classes, classes), missed[:, None]], axis=1)


def iou_from_confusion(matrix: np.ndarray) -> np.ndarray:
    """float[classes] IoU per class (NaN for a class absent from both target and prediction).

    ``matrix`` is :func:`confusion_matrix`'s: [classes, classes + 1], the last column
    holding target pixels predicted as nothing (255).
    """
    square = matrix[:, :-1].astype(np.float64)
    true_positive = np.diag(square)
    target_total = matrix.sum(axis=1).astype(np.float64)
    predicted_total = square.sum(axis=0)
    union = target_total + predicted_total - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / union, np.nan)


def _mean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def summarise(matrix: np.ndarray, names: Iterable[str] = VOC_CLASSES) -> dict:
    """Scores from a :func:`confusion_matrix`.

    ``mIoU`` counts unlabelled (255) predictions as misses; ``mIoU_labelled`` scores
    only the pixels the prediction labelled, and ``coverage`` says what share that is.
    """
    iou = iou_from_confusion(matrix)
    labelled = np.concatenate([matrix[:, :-1], np.zeros_like(matrix[:, :1])], axis=1)
    total = int(matrix.sum())
    return {
        "mIoU": _mean(iou),
        "per_class_iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(names, iou, strict=True)},
        "mIoU_labelled": _mean(iou_from_confusion(labelled)),
        "coverage": float(labelled.sum() / total) if total else float("nan"),
        "pixel_accuracy": float(np.trace(matrix[:, :-1]) / total) if total else float("nan"),
        "pixels": total,
    }


def format_table(summary: dict) -> str:
    """The per-class IoU and the mIoU as a plain-text table."""
    lines = [f"{'class':<14}{'IoU':>8}"]
    for name, value in summary["per_class_iou"].items():
        lines.append(f"{name:<14}{'-' if value is None else f'{100 * value:7.2f}':>8}")
    lines.append(f"{'mIoU':<14}{100 * summary['mIoU']:>8.2f}")
    if summary.get("coverage", 1.0) < 1.0:
        lines.append(f"{'(labelled)':<14}{100 * summary['mIoU_labelled']:>8.2f}  on {100 * summary['coverage']:.1f}% "
                     "of the pixels")
    return "\n".join(lines)


def score_folders(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike, reader) -> tuple[np.ndarray, dict]:
    """Confusion matrix of every ``GT/<id>.png`` against ``PRED/<id>.png``.

    ``reader(path) -> uint8[H, W]`` reads one label PNG. Ground truths without a
    prediction are an error naming them (a missing prediction would silently inflate
    the score); predictions without a ground truth are ignored and counted.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for folder in (pred_dir, gt_dir):
        if not folder.is_dir():
            raise DatasetError(folder, "not a directory of label PNGs")
    targets = sorted(gt_dir.rglob("*.png"))
    if not targets:
        raise DatasetError(gt_dir, "holds no .png labels")
    missing = [t.relative_to(gt_dir).as_posix() for t in targets if not (pred_dir / t.relative_to(gt_dir)).exists()]
    if missing:
        raise DatasetError(pred_dir, f"no prediction for {len(missing)} ground truths, e.g. {missing[0]}")
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES + 1), dtype=np.int64)
    for target_path in targets:
        relative = target_path.relative_to(gt_dir)
        target, prediction = reader(target_path), reader(pred_dir / relative)
        if prediction.shape != target.shape:
            raise DatasetError(pred_dir / relative, f"is {prediction.shape[1]}x{prediction.shape[0]}, its ground truth "
                                                    f"{target.shape[1]}x{target.shape[0]}")
        matrix += confusion_matrix(prediction, target)
    extra = sum(1 for p in pred_dir.rglob("*.png") if not (gt_dir / p.relative_to(pred_dir)).exists())
    return matrix, {"images": len(targets), "predictions_without_ground_truth": extra}
