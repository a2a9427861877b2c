"""Mask AP: the COCO protocol (pycocotools) and the S4Net authors' per-image protocol."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from s4net.data.coco import _load_document, coco_document, encode_mask, mask_box
from s4net.evaluation import (
    coco_mask_ap,
    evaluate_predictions,
    occluded_image_ids,
    original_protocol_ap,
)

H, W = 40, 40


def _block(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


# Two images: image 1 has two instances (one occluded), image 2 has one.
GT_MASKS = {1: [_block(0, 10, 0, 10), _block(20, 30, 20, 30)], 2: [_block(5, 25, 5, 25)]}


def _document(occluded: bool = True) -> dict:
    images = [{"id": i, "file_name": f"{i}.jpg", "height": H, "width": W} for i in GT_MASKS]
    annotations = []
    for image_id, masks in GT_MASKS.items():
        for index, mask in enumerate(masks):
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": 1,
                "segmentation": encode_mask(mask),
                "bbox": mask_box(mask),
                "area": int(mask.sum()),
                "iscrowd": 0,
            }
            if occluded:
                ann["occluded"] = image_id == 1 and index == 0
            annotations.append(ann)
    return coco_document(images, annotations)


def _result(image_id: int, mask: np.ndarray, score: float) -> dict:
    return {
        "image_id": image_id,
        "category_id": 1,
        "segmentation": encode_mask(mask),
        "score": score,
        "bbox": mask_box(mask),
    }


def _perfect() -> list[dict]:
    return [_result(i, m, 0.9) for i, masks in GT_MASKS.items() for m in masks]


def test_occluded_image_ids() -> None:
    assert occluded_image_ids(_document()) == [1]
    assert occluded_image_ids(_document(occluded=False)) == []


@pytest.mark.parametrize("protocol", ["coco", "original"])
def test_perfect_predictions(protocol: str) -> None:
    out = evaluate_predictions(_document(), _perfect(), protocol=protocol)
    assert out["mAP50"] == pytest.approx(1.0) and out["mAP70"] == pytest.approx(1.0)
    assert out["mAP50_occluded"] == pytest.approx(1.0) and out["mAP70_occluded"] == pytest.approx(1.0)
    assert (out["images"], out["instances"], out["occluded_images"], out["protocol"]) == (2, 3, 1, protocol)
    json.dumps(out, allow_nan=False)


@pytest.mark.parametrize("protocol", ["coco", "original"])
def test_iou_between_thresholds(protocol: str) -> None:
    document = coco_document(
        [{"id": 7, "file_name": "7.jpg", "height": H, "width": W}],
        [{"id": 1, "image_id": 7, "category_id": 1, "segmentation": encode_mask(_block(0, 10, 0, 10)),
          "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0}],
    )
    results = [_result(7, _block(0, 10, 0, 6), 0.8)]  # IoU 0.6
    out = evaluate_predictions(document, results, protocol=protocol)
    assert out["mAP50"] == pytest.approx(1.0)
    assert out["mAP70"] == pytest.approx(0.0)
    assert out["mAP50_occluded"] is None and out["mAP70_occluded"] is None


def test_false_positive_ranked_first_lowers_coco_ap() -> None:
    # Precision 0, 1/2, 2/3, 3/4 at recall 0, 1/3, 2/3, 1: the interpolated envelope is 3/4 everywhere.
    results = _perfect() + [_result(2, _block(30, 40, 0, 10), 0.99)]
    aps = coco_mask_ap(_document(), results)
    assert aps == pytest.approx({0.5: 0.75, 0.7: 0.75}, abs=1e-12, rel=0)


def test_occluded_subset_restricts_images() -> None:
    # Image 1 (occluded) is predicted perfectly, image 2 gets nothing.
    # COCO: recall 2/3 at precision 1, so grid points 0..0.66 (67 of 101) score 1.
    # Original: the mean of image 1's AP (1) and image 2's (0).
    results = [_result(1, m, 0.9) for m in GT_MASKS[1]]
    for protocol, expected in (("coco", 67 / 101), ("original", 0.5)):
        out = evaluate_predictions(_document(), results, protocol=protocol)
        assert out["mAP50_occluded"] == 1.0 and out["mAP70_occluded"] == 1.0
        assert out["mAP50"] == pytest.approx(expected, abs=1e-12, rel=0)
        assert out["mAP70"] == pytest.approx(expected, abs=1e-12, rel=0)
    assert coco_mask_ap(_document(), results, image_ids=[2]) == {0.5: 0.0, 0.7: 0.0}
    assert all(math.isnan(v) for v in coco_mask_ap(_document(), results, image_ids=[]).values())


def test_no_occluded_flags_gives_none() -> None:
    out = evaluate_predictions(_document(occluded=False), _perfect())
    assert out["mAP50_occluded"] is None and out["occluded_images"] == 0


@pytest.mark.parametrize("protocol", ["coco", "original"])
def test_empty_results(protocol: str) -> None:
    out = evaluate_predictions(_document(), [], protocol=protocol)
    assert out["mAP50"] == 0.0 and out["mAP70"] == 0.0 and out["mAP50_occluded"] == 0.0


def test_unknown_protocol_and_unknown_image() -> None:
    with pytest.raises(ValueError, match="coco, original"):
        evaluate_predictions(_document(), [], protocol="voc")
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate_predictions(_document(), [_result(99, GT_MASKS[2][0], 0.5)])


def test_results_not_mutated() -> None:
    results = _perfect()
    before = json.dumps(results)
    coco_mask_ap(_document(), results)
    assert json.dumps(results) == before


def test_original_iou_equal_to_threshold_is_not_a_match() -> None:
    gt = [_block(0, 10, 0, 10)[None]]
    half = [_block(0, 10, 0, 5)[None]]  # IoU exactly 0.5
    assert original_protocol_ap(gt, half, [np.array([0.9])], 0.5) == 0.0
    assert original_protocol_ap(gt, half, [np.array([0.9])], 0.49) == pytest.approx(1.0)


def test_original_curve_matches_hand_computation() -> None:
    # Two GT, three predictions by score: miss, hit GT0, hit GT1.
    gt = np.stack([_block(0, 10, 0, 10), _block(20, 30, 20, 30)])
    pred = np.stack([_block(30, 40, 0, 10), _block(0, 10, 0, 10), _block(20, 30, 20, 30)])
    scores = np.array([0.9, 0.8, 0.7])
    # k=1: P=0 R=0; k=2: P=1/2 R=1/2; k=3: P=2/3 R=1. Points (0,0),(0,0),(1/2,1/2),(2/3,1).
    expected = 0.5 * 0.25 + (2 / 3 - 0.5) * 0.75
    assert original_protocol_ap([gt], [pred], [scores], 0.5) == pytest.approx(expected)
    # Per-image mean: an image with no prediction scores 0, an image without GT is skipped.
    empty_gt = np.zeros((0, H, W), dtype=bool)
    ap = original_protocol_ap(
        [gt, gt, empty_gt], [pred, pred[:0], pred], [scores, scores[:0], scores], 0.5
    )
    assert ap == pytest.approx(expected / 2)
    assert original_protocol_ap([gt], [pred], [scores], 0.5, max_predictions=1) == 0.0
    assert original_protocol_ap([gt], [pred], [scores], 0.5, score_threshold=0.75) == pytest.approx(0.125)


def _gt_as_results(document: dict) -> list[dict]:
    coco = COCO()
    coco.dataset = document
    coco.createIndex()
    results = []
    for ann in document["annotations"]:
        if ann.get("iscrowd"):
            continue
        rle = coco.annToRLE(ann)
        counts = rle["counts"].decode("ascii") if isinstance(rle["counts"], bytes) else rle["counts"]
        results.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "score": 1.0,
                        "segmentation": {"size": list(rle["size"]), "counts": counts},
                        "bbox": [float(v) for v in mask_utils.toBbox(rle)]})
    return results


@pytest.mark.parametrize("protocol", ["coco", "original"])
@pytest.mark.parametrize(
    "relative", ["coco_val2017_icevision6/annotations.json", "labelme_voc_instance3/data_dataset_coco/annotations.json"]
)
def test_real_ground_truth_against_itself(
    realdata, relative: str, protocol: str, capsys: pytest.CaptureFixture
) -> None:
    """Real COCO files (one with a crowd RLE, one with annotation id 0): GT as results scores 1.0."""
    path = realdata / relative
    if not path.is_file():
        pytest.skip(f"{path} not found")
    document = _load_document(path)
    results = _gt_as_results(document)
    capsys.readouterr()
    out = evaluate_predictions(document, results, protocol=protocol)
    assert capsys.readouterr().out == ""  # pycocotools' chatter is silenced
    assert out["mAP50"] == pytest.approx(1.0) and out["mAP70"] == pytest.approx(1.0)
    assert out["mAP50_occluded"] is None
    assert out["instances"] == len(results)
