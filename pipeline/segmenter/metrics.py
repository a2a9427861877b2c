"""Semantic segmentation scores: one dataset-level confusion matrix, mIoU over the 21 VOC classes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

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


def as_background(matrix: np.ndarray) -> np.ndarray:
    """:func:`confusion_matrix` with unlabelled (255) predictions counted as background.

    This is how the field scores pseudo labels (IRN's ``eval_sem_seg`` sets 255 to 0
    before scoring), so its numbers compare with published ones.
    """
    moved = matrix.copy()
    moved[:, 0] += moved[:, -1]
    moved[:, -1] = 0
    return moved


def precision_recall(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float[classes] precision (of the pixels predicted as a class) and recall (of its target pixels).

    Unlabelled predictions count against recall, not precision; NaN where undefined.
    """
    square = matrix[:, :-1].astype(np.float64)
    true_positive = np.diag(square)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(square.sum(axis=0) > 0, true_positive / square.sum(axis=0), np.nan)
        recall = np.where(matrix.sum(axis=1) > 0, true_positive / matrix.sum(axis=1), np.nan)
    return precision, recall


def _named(values: np.ndarray, names: Iterable[str]) -> dict[str, float | None]:
    return {name: (None if np.isnan(v) else float(v)) for name, v in zip(names, values, strict=True)}


def summarise(matrix: np.ndarray, names: Iterable[str] = VOC_CLASSES) -> dict:
    """Scores from a :func:`confusion_matrix`.

    ``mIoU`` counts unlabelled (255) predictions as misses; ``mIoU_labelled`` scores
    only the pixels the prediction labelled, and ``coverage`` says what share that is;
    ``mIoU_ignore_as_background`` counts them as background, as the field scores pseudo
    labels. Per class: IoU, precision and recall (the miss policy).
    """
    names = tuple(names)
    iou = iou_from_confusion(matrix)
    labelled = np.concatenate([matrix[:, :-1], np.zeros_like(matrix[:, :1])], axis=1)
    field = iou_from_confusion(as_background(matrix))
    precision, recall = precision_recall(matrix)
    total = int(matrix.sum())
    return {
        "mIoU": _mean(iou),
        "per_class_iou": _named(iou, names),
        "mIoU_labelled": _mean(iou_from_confusion(labelled)),
        "coverage": float(labelled.sum() / total) if total else float("nan"),
        "mIoU_ignore_as_background": _mean(field),
        "per_class_iou_ignore_as_background": _named(field, names),
        "per_class_precision": _named(precision, names),
        "per_class_recall": _named(recall, names),
        "mean_precision": _mean(precision),
        "mean_recall": _mean(recall),
        "pixel_accuracy": float(np.trace(matrix[:, :-1]) / total) if total else float("nan"),
        "pixels": total,
    }


def format_table(summary: dict) -> str:
    """Per-class IoU (with precision and recall when scored) and the mIoU as a plain-text table."""
    extra = "per_class_precision" in summary

    def cell(value: float | None) -> str:
        return f"{'-' if value is None else f'{100 * value:7.2f}':>8}"

    lines = [f"{'class':<14}{'IoU':>8}" + (f"{'prec.':>8}{'recall':>8}" if extra else "")]
    for name, value in summary["per_class_iou"].items():
        row = f"{name:<14}{cell(value)}"
        if extra:
            row += cell(summary["per_class_precision"][name]) + cell(summary["per_class_recall"][name])
        lines.append(row)
    lines.append(f"{'mIoU':<14}{100 * summary['mIoU']:>8.2f}"
                 + (f"{100 * summary['mean_precision']:>8.2f}{100 * summary['mean_recall']:>8.2f}" if extra else ""))
    if summary.get("coverage", 1.0) < 1.0:
        lines.append(f"{'(labelled)':<14}{100 * summary['mIoU_labelled']:>8.2f}  on {100 * summary['coverage']:.1f}% "
                     "of the pixels")
        if "mIoU_ignore_as_background" in summary:
            lines.append(f"{'(255 as bg)':<14}{100 * summary['mIoU_ignore_as_background']:>8.2f}  unlabelled pixels "
                         "scored as background, as the field scores pseudo labels")
    return "\n".join(lines)


def score_folders(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike, reader,
                  ids: Sequence[str] | None = None) -> tuple[np.ndarray, dict]:
    """Confusion matrix of every ``GT/<id>.png`` (or only those of ``ids``) against ``PRED/<id>.png``.

    ``reader(path) -> uint8[H, W]`` reads one label PNG. Ground truths without a
    prediction are an error naming them (a missing prediction would silently inflate
    the score); predictions without a ground truth are ignored and counted.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for folder in (pred_dir, gt_dir):
        if not folder.is_dir():
            raise DatasetError(folder, "not a directory of label PNGs")
    if ids is None:
        targets = sorted(gt_dir.rglob("*.png"))
    else:
        targets = [gt_dir / f"{image_id}.png" for image_id in ids]
        absent = [t.name for t in targets if not t.is_file()]
        if absent:
            raise DatasetError(gt_dir, f"no ground truth for {len(absent)} listed ids, e.g. {absent[0]}")
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
