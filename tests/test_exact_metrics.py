"""Exact checks: our COCO mask AP equals stock pycocotools COCOeval on a non-trivial hand-built case.

``s4net.evaluation.coco_mask_ap`` drives COCOeval with its own parameters (class
agnostic, two IoU thresholds, one area range, one detection cap) on a renumbered
copy of the document. Here the reference is COCOeval used the stock way: the
document read from a JSON file, default parameters (ten IoU thresholds 0.5:0.05:0.95,
four area ranges, maxDets 1/10/100, per category), ``summarize()``; AP at 0.5 is
``stats[1]`` and AP at 0.7 is read from ``eval["precision"]`` at the 0.7 threshold,
area "all", maxDets 100, as ``summarize`` reads it.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from s4net.data.coco import coco_document, encode_mask, mask_box
from s4net.evaluation import coco_mask_ap, evaluate_predictions, occluded_image_ids

H, W = 40, 40


def _block(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


# Ground truth: image -> [(mask, occluded)]. Images 1, 3 and 5 hold an occluded instance.
# 9 GT in all, 7 in the occluded images: recalls k/9 and k/7 never fall on COCOeval's 0.01 grid.
GT = {
    1: [(_block(0, 10, 0, 10), True), (_block(20, 30, 20, 30), False), (_block(0, 10, 25, 40), False)],
    2: [(_block(5, 25, 5, 25), False), (_block(28, 38, 0, 20), False)],
    3: [(_block(0, 20, 0, 20), True), (_block(20, 40, 20, 40), False), (_block(0, 8, 30, 40), False)],
    4: [],
    5: [(_block(10, 30, 10, 30), True)],
}

# Detections: (image, mask, score, (GT index it overlaps most, its IoU) or None). All scores distinct.
DETECTIONS = [
    (1, _block(0, 10, 0, 10), 0.95, (0, 1.0)),  # exact
    (2, _block(7, 27, 8, 28), 0.90, (0, 306 / 494)),  # 0.62: TP at 0.5, FP at 0.7
    (1, _block(20, 30, 23, 33), 0.85, (1, 70 / 130)),  # 0.54: TP at 0.5, FP at 0.7
    (3, _block(0, 20, 2, 22), 0.80, (0, 360 / 440)),  # 0.82
    (3, _block(10, 30, 10, 30), 0.75, (0, 100 / 700)),  # straddles two GT, matches neither
    (2, _block(30, 40, 25, 40), 0.70, None),  # background
    (5, _block(10, 30, 13, 33), 0.65, (0, 340 / 460)),  # 0.74: just above 0.7
    (1, _block(2, 12, 0, 10), 0.60, (0, 80 / 120)),  # duplicate of the exact one (0.67)
    (4, _block(0, 10, 0, 10), 0.55, None),  # image without GT
    (1, _block(0, 10, 27, 40), 0.45, (2, 130 / 150)),  # 0.87
    (3, _block(21, 40, 21, 40), 0.30, (1, 361 / 400)),  # 0.90, inside its GT
    (5, _block(10, 30, 16, 36), 0.20, (0, 280 / 520)),  # 0.54: a late, weaker duplicate
]
# Missed: image 2's second instance and image 3's third.


def _document() -> dict:
    images = [{"id": i, "file_name": f"{i}.jpg", "height": H, "width": W} for i in GT]
    annotations = []
    for image_id, instances in GT.items():
        for mask, occluded in instances:
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                "segmentation": encode_mask(mask), "bbox": mask_box(mask), "area": int(mask.sum()),
                "iscrowd": 0, "occluded": occluded,
            })
    return coco_document(images, annotations)


def _results() -> list[dict]:
    return [
        {"image_id": i, "category_id": 1, "segmentation": encode_mask(m), "score": s, "bbox": mask_box(m)}
        for i, m, s, _ in DETECTIONS
    ]


def _stock_cocoeval(tmp_path: Path, document: dict, results: list[dict], image_ids: list[int] | None) -> dict:
    """AP at 0.5 and 0.7 from COCOeval with its default parameters (area "all", maxDets 100)."""
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(document))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        evaluator = COCOeval(gt, gt.loadRes(json.loads(json.dumps(results))), iouType="segm")
        if image_ids is not None:
            evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    params = evaluator.params
    assert params.maxDets[-1] == 100 and params.areaRngLbl[0] == "all"
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]
    index_70 = int(np.flatnonzero(np.isclose(params.iouThrs, 0.7))[0])
    at_70 = precision[index_70, :, :, 0, -1]
    return {0.5: float(evaluator.stats[1]), 0.7: float(at_70[at_70 > -1].mean())}


def test_designed_ious() -> None:
    """The case is what the comments say: each detection's best IoU with its image's GT."""
    for image_id, mask, _, expected in DETECTIONS:
        gts = [m for m, _ in GT[image_id]]
        if not gts:
            assert expected is None
            continue
        ious = mask_utils.iou([encode_mask(mask)], [encode_mask(g) for g in gts], [0] * len(gts))[0]
        if expected is None:
            assert ious.max() == 0.0
        else:
            assert int(np.argmax(ious)) == expected[0] and ious.max() == pytest.approx(expected[1], abs=1e-12)


# Hand computation (greedy matching by score, 101-point interpolated precision, grid r = 0, 0.01, ..., 1).
# All images, 9 GT, detections in the order above (ranks 1-12):
#   IoU 0.5: hits at ranks 1-4, 7, 10, 11 -> precision envelope 1 to recall 4/9 (r <= 0.44, 45 points),
#            5/7 to 5/9 (0.45..0.55, 11 points), 7/11 to 7/9 (0.56..0.77, 22 points), then 0.
#   IoU 0.7: hits at ranks 1, 4, 7, 10, 11 -> 1 to 1/9 (12 points), 1/2 to 2/9 (11 points),
#            5/11 to 5/9 (0.23..0.55, 33 points).
# Occluded images 1, 3, 5 (7 GT): their detections are ranks 1, 3, 4, 5, 7, 8, 10, 11, 12 (9 of them):
#   IoU 0.5: hits at their ranks 1, 2, 3, 5, 7, 8 -> 1 to 3/7 (43 points), 4/5 to 4/7 (15 points),
#            3/4 to 6/7 (28 points).
#   IoU 0.7: hits at 1, 3, 5, 7, 8 -> 1 to 1/7 (15 points), 2/3 to 2/7 (14 points), 5/8 to 5/7 (43 points).
EXPECTED = {
    "all": {0.5: (45 + 11 * 5 / 7 + 22 * 7 / 11) / 101, 0.7: (12 + 11 / 2 + 33 * 5 / 11) / 101},
    "occluded": {0.5: (43 + 15 * 4 / 5 + 28 * 3 / 4) / 101, 0.7: (15 + 14 * 2 / 3 + 43 * 5 / 8) / 101},
}


@pytest.mark.parametrize("subset", ["all", "occluded"])
def test_coco_mask_ap_equals_stock_cocoeval(tmp_path: Path, subset: str) -> None:
    document, results = _document(), _results()
    # Our occluded subset: images with at least one non-crowd annotation flagged occluded.
    # COCOeval mirrors it by restricting imgIds to those images (all their GT and detections count).
    image_ids = None if subset == "all" else occluded_image_ids(document)
    if image_ids is not None:
        assert image_ids == [1, 3, 5]
    ours = coco_mask_ap(document, results, image_ids=image_ids)
    stock = _stock_cocoeval(tmp_path, document, results, image_ids)
    assert ours == pytest.approx(stock, abs=1e-12, rel=0)
    assert ours == pytest.approx(EXPECTED[subset], abs=1e-12, rel=0)
    summary = evaluate_predictions(document, results)
    suffix = "" if subset == "all" else "_occluded"
    assert summary[f"mAP50{suffix}"] == ours[0.5] and summary[f"mAP70{suffix}"] == ours[0.7]
