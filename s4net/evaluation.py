"""Salient-instance mask AP: COCO-style (pycocotools) and the S4Net authors' per-image protocol.

Ground truth is a COCO instance document (see :mod:`s4net.data.coco`); predictions
are COCO results (``image_id``, ``category_id``, RLE ``segmentation``, ``score``).
Both protocols are class-agnostic.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from collections import defaultdict
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

log = logging.getLogger(__name__)

PROTOCOLS = ("coco", "original")
THRESHOLDS = (0.5, 0.7)


def occluded_image_ids(document: dict[str, Any]) -> list[int]:
    """Sorted ids of images with at least one non-crowd annotation flagged ``occluded``."""
    return sorted({a["image_id"] for a in document["annotations"] if a.get("occluded") and not a.get("iscrowd")})


def _coco(document: dict[str, Any]) -> COCO:
    """A pycocotools COCO over a copy of ``document`` with ``iscrowd`` and ``area`` filled in.

    Annotation ids are renumbered 1..N: COCOeval records matches by id and reads id 0 as "unmatched".
    """
    annotations = [{"iscrowd": 0, **ann, "id": index + 1} for index, ann in enumerate(document["annotations"])]
    coco = COCO()
    coco.dataset = {**document, "annotations": annotations}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    for ann in annotations:
        if "area" not in ann:
            ann["area"] = float(mask_utils.area(coco.annToRLE(ann)))
    return coco


def _check_result_images(document: dict[str, Any], results: Sequence[dict[str, Any]]) -> None:
    known = {image["id"] for image in document["images"]}
    unknown = sorted({r["image_id"] for r in results} - known)
    if unknown:
        raise ValueError(f"{len(unknown)} result image_id(s) not in the ground truth, e.g. {unknown[:5]}")


def coco_mask_ap(
    gt_document: dict[str, Any],
    results: list[dict[str, Any]],
    iou_thresholds: Sequence[float] = THRESHOLDS,
    image_ids: Sequence[int] | None = None,
    max_detections: int = 100,
) -> dict[float, float]:
    """Class-agnostic mask AP per IoU threshold with pycocotools' COCOeval (area range "all").

    A match needs IoU >= threshold (COCOeval's rule). AP is the mean of the
    101-point interpolated precision, as ``COCOeval.summarize`` computes it.
    Returns NaN per threshold when the selected images hold no non-crowd GT,
    and 0.0 when there are no results at all.
    """
    thresholds = [float(t) for t in iou_thresholds]
    selected = None if image_ids is None else {int(i) for i in image_ids}
    anns = gt_document["annotations"]
    n_gt = sum(1 for a in anns if not a.get("iscrowd") and (selected is None or a["image_id"] in selected))
    if n_gt == 0:
        return {t: math.nan for t in thresholds}
    if not results:
        return {t: 0.0 for t in thresholds}
    _check_result_images(gt_document, results)
    gt = _coco(gt_document)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes([dict(r) for r in results])  # loadRes mutates its input
        evaluator = COCOeval(gt, dt, iouType="segm")
        params = evaluator.params
        params.iouThrs = np.asarray(thresholds, dtype=np.float64)
        params.maxDets = [int(max_detections)]
        params.areaRng, params.areaRngLbl = [[0.0, 1e10]], ["all"]
        params.useCats = 0
        if selected is not None:
            params.imgIds = sorted(selected)
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]
    aps = {}
    for index, threshold in enumerate(thresholds):
        values = precision[index, :, :, 0, 0]
        values = values[values > -1]
        aps[threshold] = float(values.mean()) if values.size else math.nan
    log.debug("COCO mask AP over %d GT instances: %s", n_gt, aps)
    return aps


def _auc(x: Sequence[float], y: Sequence[float]) -> float:
    """Trapezoid area over the points in the given order (``sklearn.metrics.auc`` for sorted x)."""
    return float(sum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2.0 for i in range(len(x) - 1)))


def _original_image_ap(
    gt: np.ndarray,
    pred: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    max_predictions: int = 20,
    score_threshold: float | None = None,
) -> float | None:
    """One image's AP under the authors' protocol; ``None`` when the image has no GT."""
    if len(gt) == 0:
        return None
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.size == 0:
        return 0.0
    pred = np.asarray(pred, dtype=bool).reshape(len(scores), -1)
    order = np.argsort(scores, kind="stable")[::-1]  # as np.argsort(scores)[::-1]: ties, later first
    if score_threshold is not None:
        order = order[scores[order] >= score_threshold]
    order = order[:max_predictions]
    if order.size == 0:
        return 0.0
    pred = pred[order]
    gt = np.asarray(gt, dtype=bool).reshape(len(gt), -1)
    pred_area = np.count_nonzero(pred, axis=1)
    ious = np.zeros((len(gt), len(pred)), dtype=np.float64)
    for i, mask in enumerate(gt):
        inter = np.count_nonzero(pred & mask, axis=1)
        union = pred_area + np.count_nonzero(mask) - inter
        with np.errstate(divide="ignore", invalid="ignore"):  # float32 like the original's .sum()
            ious[i] = np.nan_to_num(inter.astype(np.float32) / union.astype(np.float32), nan=0.0)
    best_recall: dict[float, float] = {}  # keyed by precision: the original's swapped unpacking
    for k in range(1, len(pred) + 1):
        work = ious[:, :k].copy()
        true_pos = 0
        for row in work:  # each GT in order takes its best still-unused prediction
            j = int(np.argmax(row))
            if row[j] > iou_threshold:
                true_pos += 1
                work[:, j] = 0.0
        precision, recall = true_pos / k, true_pos / len(gt)
        best_recall[precision] = max(recall, best_recall.get(precision, -1.0))
    xs = sorted(best_recall)
    ys = [best_recall[x] for x in xs]
    return _auc([0.0] + xs, ys[:1] + ys)


def original_protocol_ap(
    gt_masks: list[np.ndarray],
    pred_masks: list[np.ndarray],
    pred_scores: list[np.ndarray],
    iou_threshold: float,
    max_predictions: int = 20,
    score_threshold: float | None = None,
) -> float:
    """Mean per-image AP as in the S4Net authors' ``experiment/evaluation.py`` (a replication of a quirky protocol).

    Per image (``gt_masks[i]`` bool[G,H,W], ``pred_masks[i]`` bool[P,H,W],
    ``pred_scores[i]`` float[P]): predictions are sorted by score (ties: later
    first, like ``np.argsort(s)[::-1]``) and capped at ``max_predictions``. For
    each k = 1..K the top k are matched: each GT in GT order takes its highest-IoU
    prediction still unused, a true positive when IoU > threshold (strict); IoU
    is computed in float32 as the original does. Because the original unpacks
    ``(recall, precision)`` as ``(accu, recall)``, the curve has precision
    TP_k/k on x and recall TP_k/G on y: for each distinct precision the largest
    recall is kept, points are sorted by precision, ``(0, first recall)`` is
    prepended, and the trapezoid area is taken (no interpolated envelope). x is
    therefore sorted, so ``sklearn.metrics.auc`` would accept it and equals the
    trapezoid rule used here.

    The original's ``filter_thresh = 0.5`` binarises mask *pixels*, not scores,
    and no score filter is applied; masks here are already binary. Pass
    ``score_threshold`` to also drop predictions scoring below it (not original).
    Deviations where the original would crash: images with no GT are skipped
    (ZeroDivisionError there), images with no kept prediction score 0 (sklearn
    raises on one point), and empty masks give IoU 0 instead of NaN.
    Returns NaN when no image has GT.
    """
    aps = [
        ap
        for gt, pred, scores in zip(gt_masks, pred_masks, pred_scores, strict=True)
        if (ap := _original_image_ap(gt, pred, scores, iou_threshold, max_predictions, score_threshold)) is not None
    ]
    return float(np.mean(aps)) if aps else math.nan


def _original_protocol(
    gt_document: dict[str, Any], results: list[dict[str, Any]], image_ids: Sequence[int], max_detections: int
) -> dict[float, float]:
    """Decode GT and predictions image by image and average the authors' per-image AP."""
    coco = _coco(gt_document)
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for result in results:
        by_image[result["image_id"]].append(result)
    aps: dict[float, list[float]] = {t: [] for t in THRESHOLDS}
    for image_id in image_ids:
        info = coco.imgs[image_id]
        height, width = int(info["height"]), int(info["width"])
        anns = [a for a in coco.imgToAnns.get(image_id, []) if not a.get("iscrowd")]
        if not anns:
            continue
        gt = np.stack([coco.annToMask(a).astype(bool) for a in anns])
        preds = by_image.get(image_id, [])
        pred = np.zeros((len(preds), height, width), dtype=bool)
        for index, result in enumerate(preds):
            rle = dict(result["segmentation"])
            if isinstance(rle.get("counts"), str):
                rle["counts"] = rle["counts"].encode("ascii")
            if list(rle["size"]) != [height, width]:
                raise ValueError(f"result for image {image_id} has size {rle['size']}, image is {[height, width]}")
            pred[index] = mask_utils.decode(rle).astype(bool)
        scores = np.asarray([float(r["score"]) for r in preds], dtype=np.float64)
        for threshold in THRESHOLDS:
            ap = _original_image_ap(gt, pred, scores, threshold, max_predictions=max_detections)
            if ap is not None:
                aps[threshold].append(ap)
    return {t: float(np.mean(v)) if v else math.nan for t, v in aps.items()}


def evaluate_predictions(
    gt_document: dict[str, Any],
    results: list[dict[str, Any]],
    protocol: str = "coco",
    max_detections: int = 100,
) -> dict[str, Any]:
    """mAP at IoU 0.5 / 0.7 over all images and over images with occluded instances.

    ``protocol`` is ``"coco"`` (:func:`coco_mask_ap`) or ``"original"``
    (:func:`original_protocol_ap`, with ``max_detections`` as its cap). Scores
    that are undefined (no GT, e.g. no occluded flags) are ``None``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    _check_result_images(gt_document, results)
    all_ids = [image["id"] for image in gt_document["images"]]
    occluded = occluded_image_ids(gt_document)
    scores: dict[str, float | None] = {}
    for suffix, ids in (("", all_ids), ("_occluded", occluded)):
        if protocol == "coco":
            aps = coco_mask_ap(gt_document, results, THRESHOLDS, image_ids=ids, max_detections=max_detections)
        else:
            aps = _original_protocol(gt_document, results, ids, max_detections)
        for threshold, ap in aps.items():
            scores[f"mAP{round(threshold * 100)}{suffix}"] = None if math.isnan(ap) else float(ap)
    summary = {
        **scores,
        "images": len(all_ids),
        "instances": sum(1 for a in gt_document["annotations"] if not a.get("iscrowd")),
        "occluded_images": len(occluded),
        "protocol": protocol,
    }
    log.info("evaluation (%s): %s", protocol, summary)
    return summary
