"""Keyword assignment, proxy-label composition, dense CRF and scoring, on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.classes import CLASS_INDEX, IGNORE_INDEX, NUM_CLASSES
from pipeline.cues.crf import CRFConfig, crf_inference, refine_labels
from pipeline.cues.keyword_assignment import (
    LOW_CONFIDENCE,
    LOW_SCORE,
    MATCHED,
    SMALL,
    AssignmentConfig,
    assign_keywords,
)
from pipeline.cues.label_painting import ProxyConfig, border_band, instance_labels, saliency_labels
from pipeline.datasets.voc import read_voc_label, write_voc_label
from pipeline.segmenter.metrics import confusion_matrix, iou_from_confusion, score_folders, summarise

CFG = AssignmentConfig(score_threshold=0.5, min_area=0.01, min_confidence=0.6)


def _assign(keywords, scores, areas, probs=None):
    return assign_keywords(keywords, np.asarray(scores, float), np.asarray(areas, float),
                           None if probs is None else np.asarray(probs, float), CFG)


# ------------------------------------------------------------ assignment
def test_single_keyword_goes_to_every_kept_instance() -> None:
    out = _assign(["dog"], [0.9, 0.7, 0.3, 0.8], [0.2, 0.1, 0.2, 0.001])
    assert out.keywords == ("dog", "dog", None, None)
    assert out.status == ("kept", "kept", LOW_SCORE, SMALL)
    assert out.labelled() == [0, 1] and out.rejected() == [3]


def test_several_keywords_match_one_to_one_before_argmax() -> None:
    # both instances prefer "cat", but "dog" must get one: the one-to-one step gives it instance 1
    probs = [[0.9, 0.1], [0.6, 0.4], [0.95, 0.05]]
    out = _assign(["cat", "dog"], [0.9, 0.9, 0.9], [0.1, 0.1, 0.1], probs)
    assert out.keywords == ("cat", "dog", "cat")
    assert out.status == ("kept", MATCHED, MATCHED)  # the most likely cat is the matched one


def test_unmatched_unsure_instances_become_ignore() -> None:
    probs = [[0.99, 0.01], [0.01, 0.99], [0.55, 0.45]]
    out = _assign(["cat", "dog"], [0.9, 0.9, 0.9], [0.1, 0.1, 0.1], probs)
    assert out.keywords == ("cat", "dog", None) and out.status[2] == LOW_CONFIDENCE
    assert out.rejected() == [2]


def test_more_keywords_than_instances_takes_each_instance_best() -> None:
    probs = [[0.1, 0.8, 0.1]]
    out = _assign(["cat", "dog", "bird"], [0.9], [0.1], probs)
    assert out.keywords == ("dog",)
    unsure = _assign(["cat", "dog", "bird"], [0.9], [0.1], [[0.4, 0.3, 0.3]])
    assert unsure.keywords == (None,) and unsure.status == (LOW_CONFIDENCE,)


def test_no_instances_and_bad_inputs() -> None:
    empty = _assign(["cat", "dog"], [], [], np.zeros((0, 2)))
    assert empty.keywords == () and empty.labelled() == []
    with pytest.raises(ValueError, match="need instance probabilities"):
        _assign(["cat", "dog"], [0.9], [0.1])
    with pytest.raises(ValueError, match="at least one keyword"):
        _assign([], [0.9], [0.1])
    with pytest.raises(ValueError, match="min_area"):
        AssignmentConfig(min_area=2.0)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 4), st.integers(0, 6), st.integers(0, 10_000))
def test_every_keyword_gets_an_instance_when_there_are_enough(keywords: int, instances: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    names = ["cat", "dog", "bird", "horse"][:keywords]
    probs = rng.dirichlet(np.ones(keywords), size=instances) if instances else np.zeros((0, keywords))
    out = _assign(names, np.full(instances, 0.9), np.full(instances, 0.1), probs if keywords > 1 else None)
    if keywords == 1 or instances >= keywords:
        assert set(names) <= set(k for k in out.keywords if k is not None) or instances == 0
    assert len(out.keywords) == instances


# ------------------------------------------------------------ composition
def _disc(shape, centre, radius, soft=False):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    distance = np.hypot(yy - centre[0], xx - centre[1])
    if soft:
        return np.clip(1.0 - (distance - radius + 2) / 4, 0, 1).astype(np.float32)
    return (distance <= radius).astype(np.float32)


def test_instance_labels_paint_classes_ignore_rejected_and_borders() -> None:
    masks = np.stack([_disc((40, 40), (12, 12), 7), _disc((40, 40), (28, 28), 7), _disc((40, 40), (12, 30), 4)])
    labels = instance_labels(masks, ["cat", "dog", None], [2], ProxyConfig(border=1))
    assert labels[12, 12] == CLASS_INDEX["cat"] and labels[28, 28] == CLASS_INDEX["dog"]
    assert labels[12, 30] == IGNORE_INDEX  # the rejected instance
    assert labels[0, 0] == 0 and labels[39, 39] == 0
    assert labels[12, 12 + 7] == IGNORE_INDEX  # on the cat's boundary band
    no_border = instance_labels(masks, ["cat", "dog", None], [2], ProxyConfig(border=0))
    assert np.isin(no_border, [0, CLASS_INDEX["cat"], CLASS_INDEX["dog"], IGNORE_INDEX]).all()
    empty = instance_labels(np.zeros((0, 40, 40)), [], [], ProxyConfig(), shape=(40, 40))
    assert (empty == 0).all()


def test_saliency_labels_name_only_single_keyword_foreground() -> None:
    masks = np.stack([_disc((30, 30), (10, 10), 5), _disc((30, 30), (20, 20), 5)])
    single = saliency_labels(masks, ["sheep"], ProxyConfig(border=0))
    assert single[10, 10] == single[20, 20] == CLASS_INDEX["sheep"] and single[0, 29] == 0
    multi = saliency_labels(masks, ["sheep", "cow"], ProxyConfig(border=0))
    assert multi[10, 10] == multi[20, 20] == IGNORE_INDEX and multi[0, 29] == 0


def test_border_band_marks_both_sides_of_a_boundary_only() -> None:
    labels = np.zeros((6, 6), dtype=np.uint8)
    labels[:, 3:] = 5
    band = border_band(labels, 1)
    assert band[:, 2:4].all() and not band[:, :2].any() and not band[:, 4:].any()
    labels[:, :2] = IGNORE_INDEX
    assert not border_band(labels, 1)[:, :2].any()


def test_palette_label_round_trip(tmp_path) -> None:
    labels = np.random.default_rng(0).choice([0, 3, 15, 20, 255], size=(17, 23)).astype(np.uint8)
    write_voc_label(tmp_path / "a" / "x.png", labels)
    assert np.array_equal(read_voc_label(tmp_path / "a" / "x.png"), labels)


# ------------------------------------------------------------ CRF
def test_crf_sharpens_a_blurred_label_and_leaves_ignore_alone() -> None:
    rng = np.random.default_rng(0)
    truth = np.zeros((48, 48), dtype=np.uint8)
    truth[12:36, 12:36] = CLASS_INDEX["cat"]
    image = np.where(truth[..., None] > 0, 200, 40).astype(np.uint8) + rng.integers(0, 10, (48, 48, 3), dtype=np.uint8)
    soft = _disc((48, 48), (24, 24), 15, soft=True)  # a blurred, rounder cue than the square object
    probs = np.stack([1 - soft, soft])
    labels = np.where(soft > 0.5, CLASS_INDEX["cat"], 0).astype(np.uint8)
    labels[:3, :3] = IGNORE_INDEX
    refined = refine_labels(image, labels, probs, [0, CLASS_INDEX["cat"]], CRFConfig())
    assert (refined[:3, :3] == IGNORE_INDEX).all()
    valid = labels != IGNORE_INDEX
    assert (refined[valid] == truth[valid]).mean() > (labels[valid] == truth[valid]).mean() + 0.02
    with pytest.raises(ValueError, match="label ids"):
        refine_labels(image, labels, probs, [0], CRFConfig())
    with pytest.raises(ValueError, match="iterations"):
        CRFConfig(iterations=0)


def test_crf_knobs_run_it_smaller_and_shorter_and_still_sharpen() -> None:
    rng = np.random.default_rng(0)
    truth = np.zeros((64, 80), dtype=np.uint8)
    truth[16:48, 20:60] = CLASS_INDEX["cat"]
    image = np.where(truth[..., None] > 0, 200, 40).astype(np.uint8) + rng.integers(0, 10, (64, 80, 3), dtype=np.uint8)
    soft = _disc((64, 80), (32, 40), 18, soft=True)
    probs = np.stack([1 - soft, soft])
    labels = np.where(soft > 0.5, CLASS_INDEX["cat"], 0).astype(np.uint8)
    labels[:3, :3] = IGNORE_INDEX
    valid = labels != IGNORE_INDEX
    before = (labels[valid] == truth[valid]).mean()
    full = refine_labels(image, labels, probs, [0, CLASS_INDEX["cat"]], CRFConfig())
    for config in (CRFConfig(scale=0.5), CRFConfig(iterations=3), CRFConfig(scale=0.25, iterations=3)):
        refined = refine_labels(image, labels, probs, [0, CLASS_INDEX["cat"]], config)
        assert refined.shape == labels.shape and (refined[:3, :3] == IGNORE_INDEX).all(), config
        assert (refined[valid] == truth[valid]).mean() > before, config  # cheaper, and still better than the cue
    half = crf_inference(image, probs, CRFConfig(scale=0.5))
    assert half.shape == probs.shape and not np.allclose(half, crf_inference(image, probs, CRFConfig()))
    assert np.allclose(half.sum(axis=0), 1.0, atol=1e-3)
    assert (full[valid] == truth[valid]).mean() > before + 0.02
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="scale"):
            CRFConfig(scale=bad)


# ------------------------------------------------------------ scoring
def _brute_force_iou(pairs) -> np.ndarray:
    inter = np.zeros(NUM_CLASSES)
    union = np.zeros(NUM_CLASSES)
    for pred, gt in pairs:
        for y in range(gt.shape[0]):
            for x in range(gt.shape[1]):
                g, p = int(gt[y, x]), int(pred[y, x])
                if g == IGNORE_INDEX:
                    continue
                if p == g:
                    inter[g] += 1
                    union[g] += 1
                else:
                    union[g] += 1
                    if p < NUM_CLASSES:
                        union[p] += 1
    with np.errstate(invalid="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def test_score_matches_a_per_pixel_count(tmp_path) -> None:
    rng = np.random.default_rng(1)
    pairs = []
    for i in range(3):
        gt = rng.choice([0, 1, 2, 7, 255], size=(9, 11), p=[0.4, 0.2, 0.2, 0.1, 0.1]).astype(np.uint8)
        pred = rng.choice([0, 1, 2, 5, 255], size=(9, 11)).astype(np.uint8)
        pairs.append((pred, gt))
        write_voc_label(tmp_path / "gt" / f"{i}.png", gt)
        write_voc_label(tmp_path / "pred" / f"{i}.png", pred)
    matrix, counts = score_folders(tmp_path / "pred", tmp_path / "gt", read_voc_label)
    np.testing.assert_allclose(iou_from_confusion(matrix), _brute_force_iou(pairs), equal_nan=True)
    summary = summarise(matrix)
    assert summary["mIoU"] == pytest.approx(np.nanmean(_brute_force_iou(pairs)))
    assert counts == {"images": 3, "predictions_without_ground_truth": 0}
    (tmp_path / "pred" / "2.png").unlink()
    with pytest.raises(Exception, match="no prediction for 1 ground truths"):
        score_folders(tmp_path / "pred", tmp_path / "gt", read_voc_label)


def test_score_on_real_voc_masks_matches_a_per_pixel_count(realdata) -> None:
    folder = realdata / "voc2012_seg16" / "SegmentationClass"
    gts = [read_voc_label(p) for p in sorted(folder.glob("*.png"))[:3]]
    rng = np.random.default_rng(2)
    preds = [np.where(rng.random(g.shape) < 0.2, rng.integers(0, 21, g.shape), g).astype(np.uint8) for g in gts]
    small = [(p[::4, ::4], g[::4, ::4]) for p, g in zip(preds, gts, strict=True)]  # brute force on a quarter grid
    matrix = sum(confusion_matrix(p, g) for p, g in small)
    np.testing.assert_allclose(iou_from_confusion(matrix), _brute_force_iou(small), equal_nan=True)
