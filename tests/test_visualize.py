"""Tests for s4net.visualize: overlays, heat maps, box outlines and panel strips."""

from __future__ import annotations

import numpy as np
import pytest

from s4net.visualize import draw_boxes, heatmap, instance_colours, overlay_instances, side_by_side

H, W = 64, 80


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A grey image with two rectangular instances; the second scores below 0.5."""
    image = np.full((H, W, 3), 100, dtype=np.uint8)
    masks = np.zeros((2, H, W), dtype=np.float32)
    masks[0, 30:50, 20:40] = 0.9
    masks[1, 5:15, 60:75] = 0.8
    boxes = np.array([[20, 30, 40, 50], [60, 5, 75, 15]], dtype=np.float64)
    scores = np.array([0.93, 0.2])
    return image, masks, boxes, scores


def test_instance_colours_distinct_and_deterministic() -> None:
    c = instance_colours(12)
    assert c.shape == (12, 3) and c.dtype == np.uint8
    assert len({tuple(row) for row in c}) == 12
    assert np.array_equal(c, instance_colours(12))
    assert np.array_equal(instance_colours(3), c[:3])
    assert (c.max(axis=1).astype(int) - c.min(axis=1)).min() > 100  # saturated
    assert instance_colours(0).shape == (0, 3)


def test_overlay_shape_dtype_and_input_untouched() -> None:
    image, masks, boxes, scores = _scene()
    image_before, masks_before = image.copy(), masks.copy()
    out = overlay_instances(image, masks, boxes, scores)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    assert out is not image
    assert np.array_equal(image, image_before) and np.array_equal(masks, masks_before)


def test_instance_below_threshold_not_drawn() -> None:
    image, masks, boxes, scores = _scene()
    out = overlay_instances(image, masks[1:], boxes[1:], scores[1:])
    assert np.array_equal(out, image)


def test_drawn_instance_changes_mask_not_far_outside_box() -> None:
    image, masks, boxes, scores = _scene()
    out = overlay_instances(image, masks, boxes, scores)
    changed = np.any(out != image, axis=2)
    assert changed[30:50, 20:40].all()  # the whole mask is blended or outlined
    allowed = np.zeros((H, W), dtype=bool)
    allowed[29:51, 19:41] = True  # the box, one pixel of slack
    allowed[30 - 14:30, 20:20 + 40] = True  # the score label above the box's top-left
    assert not changed[~allowed].any()
    assert changed[30 - 13:30, 20:30].any()  # the label is there


def test_contour_and_box_carry_the_colour() -> None:
    image, masks, boxes, scores = _scene()
    colour = instance_colours(2)[0]
    out = overlay_instances(image, masks[:1], None, None)  # no box, no label: only blend + contour
    for y, x in [(30, 25), (49, 25), (40, 20), (40, 39)]:  # mask boundary
        assert np.array_equal(out[y, x], colour)
    inside = out[40, 30].astype(int)
    expected = np.round(0.5 * image[40, 30] + 0.5 * colour).astype(int)
    assert np.abs(inside - expected).max() <= 1
    assert np.array_equal(out[29, 25], image[29, 25])
    boxed = overlay_instances(image, np.zeros_like(masks[:1]), boxes[:1], None)
    assert np.array_equal(boxed[30, 30], colour) and np.array_equal(boxed[49, 30], colour)
    assert np.array_equal(boxed[40, 30], image[40, 30])


def test_mask_threshold_and_bool_masks() -> None:
    image, masks, _, _ = _scene()
    low = masks[:1] * 0.5  # 0.45 everywhere in the mask
    assert np.array_equal(overlay_instances(image, low, mask_threshold=0.5), image)
    assert not np.array_equal(overlay_instances(image, low, mask_threshold=0.4), image)
    as_bool = overlay_instances(image, masks[:1] > 0.5)
    assert np.array_equal(as_bool, overlay_instances(image, masks[:1]))


def test_label_stays_inside_image() -> None:
    image = np.zeros((H, W, 3), dtype=np.uint8)
    masks = np.zeros((1, H, W), dtype=bool)
    masks[0, 0:10, W - 5:W] = True
    out = overlay_instances(image, masks, np.array([[W - 5, 0, W, 10]]), np.array([0.99]))
    assert out.shape == (H, W, 3)
    assert np.any(out[:14, W - 26:W - 5] != 0)  # label pushed left and below the top edge


@pytest.mark.parametrize(
    "masks_shape, boxes_shape, scores_shape, message",
    [
        ((2, 64, 64), None, None, "masks are 2x64x64 but the image is 64x80"),
        ((64, 80), None, None, "masks are 64x80"),
        ((2, 64, 80), (3, 4), None, "boxes are 3x4"),
        ((2, 64, 80), (2, 4), (3,), "scores are 3"),
    ],
)
def test_overlay_shape_mismatch(masks_shape, boxes_shape, scores_shape, message) -> None:
    image = np.zeros((H, W, 3), dtype=np.uint8)
    boxes = None if boxes_shape is None else np.zeros(boxes_shape)
    scores = None if scores_shape is None else np.ones(scores_shape)
    with pytest.raises(ValueError, match=message):
        overlay_instances(image, np.zeros(masks_shape), boxes, scores)


def test_overlay_rejects_bad_image() -> None:
    with pytest.raises(ValueError, match="HxWx3"):
        overlay_instances(np.zeros((H, W), np.uint8), np.zeros((1, H, W)))
    with pytest.raises(ValueError, match="uint8"):
        overlay_instances(np.zeros((H, W, 3)), np.zeros((1, H, W)))


def test_heatmap_monotone_black_and_nan() -> None:
    ramp = np.tile(np.linspace(0.0, 1.0, 256), (4, 1))
    out = heatmap(ramp, vmax=1.0)
    assert out.shape == (4, 256, 3) and out.dtype == np.uint8
    brightness = out[0].astype(int).sum(axis=1)
    assert np.all(np.diff(brightness) >= 0) and brightness[-1] > brightness[0] + 500
    assert out[0, 0].max() <= 10  # zero is near-black
    values = ramp.copy()
    values[1, 100] = np.nan
    assert np.array_equal(heatmap(values, vmax=1.0)[1, 100], [0, 0, 0])
    assert np.array_equal(heatmap(np.full((3, 3), np.nan))[0, 0], [0, 0, 0])
    assert np.array_equal(values[1, :100], ramp[1, :100])  # input untouched


def test_heatmap_default_vmax() -> None:
    values = np.linspace(0.0, 10.0, 1000).reshape(20, 50)
    auto = heatmap(values)
    assert np.array_equal(auto, heatmap(values, vmax=float(np.percentile(values, 99))))
    assert np.array_equal(heatmap(np.zeros((5, 5))), heatmap(np.zeros((5, 5)), vmax=1.0))
    with pytest.raises(ValueError, match="HxW"):
        heatmap(np.zeros((2, 3, 4)))


def test_draw_boxes() -> None:
    image = np.zeros((H, W, 3), dtype=np.uint8)
    colours = np.array([[255, 0, 0], [0, 255, 0]], dtype=np.uint8)
    out = draw_boxes(image, np.array([[10, 10, 30, 20], [-5, -5, 200, 200]]), colours, width=2)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8 and not image.any()
    assert np.array_equal(out[10, 15], [255, 0, 0]) and np.array_equal(out[11, 15], [255, 0, 0])
    assert np.array_equal(out[19, 20], [255, 0, 0]) and not out[15, 20].any()
    assert np.array_equal(out[0, 40], [0, 255, 0]) and np.array_equal(out[H - 1, 40], [0, 255, 0])
    assert np.array_equal(draw_boxes(image, np.zeros((0, 4))), image)
    outside = np.array([[-30, 5, -10, 20], [W + 5, 5, W + 20, 20], [np.nan, 0, 10, 10]])
    assert np.array_equal(draw_boxes(image, outside), image)
    with pytest.raises(ValueError, match="colours are 1x3 but there are 2 boxes"):
        draw_boxes(image, np.zeros((2, 4)), colours[:1])


def test_side_by_side() -> None:
    a = np.full((20, 10, 3), 50, dtype=np.uint8)
    b = np.full((20, 15), 200, dtype=np.uint8)
    out = side_by_side([a, b], gap=4)
    assert out.shape == (20, 29, 3) and out.dtype == np.uint8
    assert np.array_equal(out[:, :10], a) and not out[:, 10:14].any() and (out[:, 14:] == 200).all()
    titled = side_by_side([a, b], ["image", "saliency"])
    assert titled.shape == (32, 29, 3)
    assert np.array_equal(titled[12:, :10], a)
    assert titled[:12, :10].any() and not titled[:12, 10:14].any()
    with pytest.raises(ValueError, match="height"):
        side_by_side([a, np.zeros((21, 5, 3), np.uint8)])
    with pytest.raises(ValueError, match="titles"):
        side_by_side([a, b], ["one"])
