"""Unit and property tests of S4Net's parts: anchors, box coding, matching, Eq. 2, RoIMasking, branch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from s4net.models.box_ops import IGNORE, NEGATIVE, POSITIVE, AnchorGenerator, BoxCoder, Matcher
from s4net.models.detection import box_loss, objectness_loss
from s4net.models.region_padding import max3x3
from s4net.models.roi_masking import RoIMasking, box_masks
from s4net.models.seg_branch import SegmentationBranch, mask_loss, paste_masks
from s4net.models.windows import (
    exact_spans,
    gather_windows,
    margin_spans,
    place_windows,
    ratio_groups,
    whole_map_windows,
    window_groups,
)


def instance_windows(boxes: torch.Tensor, index: torch.Tensor, stride: int, map_size: tuple[int, int], margin: int):
    return place_windows(*margin_spans(boxes, stride, map_size, margin), index, map_size)


# ---------------------------------------------------------------- anchors
def test_anchor_grid_layout_and_shapes() -> None:
    gen = AnchorGenerator(strides=(8, 16), ratios=(0.5, 1.0, 2.0), size_per_stride=4.0)
    anchors = gen([(5, 4), (3, 2)], torch.device("cpu"))
    assert [a.shape for a in anchors] == [(5 * 4 * 3, 4), (3 * 2 * 3, 4)]
    first = anchors[0][:3]
    centres = (first[:, :2] + first[:, 2:]) / 2
    assert torch.allclose(centres, torch.tensor([[4.0, 4.0]] * 3))  # cell centre (0.5 * stride)
    w = first[:, 2] - first[:, 0]
    h = first[:, 3] - first[:, 1]
    assert torch.allclose(w * h, torch.full((3,), 32.0 * 32.0))  # one scale: side 4 * stride
    assert torch.allclose(h / w, torch.tensor([0.5, 1.0, 2.0]))
    # the next anchor triple is one cell to the right (y, x, anchor order)
    assert torch.allclose(anchors[0][3:6, 0] - anchors[0][0:3, 0], torch.full((3,), 8.0))


boxes_strategy = st.tuples(
    st.floats(0, 200), st.floats(0, 200), st.floats(8, 150), st.floats(8, 150)
).map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])


@settings(max_examples=60, deadline=None)
@given(st.lists(boxes_strategy, min_size=1, max_size=8), st.lists(boxes_strategy, min_size=1, max_size=8))
def test_box_coding_round_trip(boxes: list, anchors: list) -> None:
    n = min(len(boxes), len(anchors))
    b = torch.tensor(boxes[:n], dtype=torch.float64)
    a = torch.tensor(anchors[:n], dtype=torch.float64)
    for weights in ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)):
        coder = BoxCoder(weights)
        assert torch.allclose(coder.decode(coder.encode(b, a), a).double(), b, atol=1e-3)


def test_matcher_bands_and_low_quality() -> None:
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 140.0, 110.0]])
    anchors = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # IoU 1 with gt 0
            [0.0, 0.0, 10.0, 14.0],  # IoU 0.714
            [0.0, 0.0, 10.0, 22.0],  # IoU 0.4545: ignore band
            [50.0, 50.0, 60.0, 60.0],  # IoU 0: negative
            [100.0, 100.0, 140.0, 140.0],  # IoU 0.25 with gt 1: its best anchor
        ]
    )
    labels, matched = Matcher(0.5, 0.4, low_quality=False)(gt, anchors)
    assert labels.tolist() == [POSITIVE, POSITIVE, IGNORE, NEGATIVE, NEGATIVE]
    labels, matched = Matcher(0.5, 0.4, low_quality=True)(gt, anchors)
    assert labels.tolist() == [POSITIVE, POSITIVE, IGNORE, NEGATIVE, POSITIVE]
    assert matched[4].item() == 1 and matched[0].item() == 0
    labels, _ = Matcher(0.5, 0.5)(torch.zeros((0, 4)), anchors)
    assert labels.tolist() == [NEGATIVE] * 5


# ---------------------------------------------------------------- Eq. 2
def test_objectness_loss_normalises_positives_and_negatives_separately() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0, 1.0, 0.0]])
    labels = torch.tensor([[1, 1, 0, 0, 0, -1]])
    pos, neg = objectness_loss(logits, labels)
    p = torch.sigmoid(logits[0])
    assert pos.item() == pytest.approx(-(torch.log(p[0]) + torch.log(p[1])).item() / 2, rel=1e-5)
    assert neg.item() == pytest.approx(-(torch.log(1 - p[2]) + torch.log(1 - p[3]) + torch.log(1 - p[4])).item() / 3,
                                       rel=1e-5)
    # tripling the negatives leaves both terms unchanged: neither set dominates by count
    more = torch.cat([logits, logits[:, 2:5].repeat(1, 2)], dim=1)
    more_labels = torch.cat([labels, torch.zeros((1, 6), dtype=torch.long)], dim=1)
    pos2, neg2 = objectness_loss(more, more_labels)
    assert pos2.item() == pytest.approx(pos.item()) and neg2.item() == pytest.approx(neg.item())
    # hard negatives: only the k negatives of highest loss count
    _, hard = objectness_loss(logits, labels, hard_negatives=1)
    assert hard.item() == pytest.approx(-torch.log(1 - p[4]).item(), rel=1e-5)
    empty_pos, _ = objectness_loss(logits, torch.zeros_like(labels))
    assert empty_pos.item() == 0.0


def test_box_loss_only_on_positives() -> None:
    deltas = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0]]])
    targets = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    labels = torch.tensor([[POSITIVE, NEGATIVE]])
    assert box_loss(deltas, targets, labels, beta=1.0).item() == pytest.approx(0.5)


# ---------------------------------------------------------------- RoIMasking
def reference_mask(box: list[float], variant: str, alpha: float, stride: int, size: tuple[int, int],
                   sub: int = 16) -> np.ndarray:
    """Brute force: average the ideal mask function over sub x sub samples per cell."""
    h, w = size
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    ox1, oy1, ox2, oy2 = x1 - alpha * bw, y1 - alpha * bh, x2 + alpha * bw, y2 + alpha * bh
    offsets = (np.arange(sub) + 0.5) / sub
    ys = ((np.arange(h)[:, None] + offsets[None]) * stride).reshape(-1)
    xs = ((np.arange(w)[:, None] + offsets[None]) * stride).reshape(-1)
    inside = ((ys[:, None] >= y1) & (ys[:, None] < y2)) & ((xs[None] >= x1) & (xs[None] < x2))
    outer = ((ys[:, None] >= oy1) & (ys[:, None] < oy2)) & ((xs[None] >= ox1) & (xs[None] < ox2))
    value = {"binary": inside * 1.0, "expanded": outer * 1.0, "ternary": inside * 1.0 - (outer & ~inside)}[variant]
    return value.reshape(h, sub, w, sub).mean(axis=(1, 3))


def _full_masks(boxes: torch.Tensor, variant: str, alpha: float, size: tuple[int, int]) -> torch.Tensor:
    origin = torch.zeros((boxes.shape[0], 2), dtype=torch.long)
    return box_masks(boxes, variant, alpha, 8, origin, size)


def test_ternary_values_and_ring_widths_on_cell_aligned_box() -> None:
    box = torch.tensor([[48.0, 48.0, 96.0, 120.0]])  # 6 x 9 cells at stride 8
    mask = _full_masks(box, "ternary", 1 / 3, (30, 30))[0]
    assert torch.all(mask[6:15, 6:12] == 1)
    # ring: 2 cells (1/3 of 6) left and right, 3 cells (1/3 of 9) above and below
    assert torch.all(mask[3:18, 4:6] == -1) and torch.all(mask[3:18, 12:14] == -1)
    assert torch.all(mask[3:6, 4:14] == -1) and torch.all(mask[15:18, 4:14] == -1)
    outside = torch.ones(30, 30, dtype=torch.bool)
    outside[3:18, 4:14] = False
    assert torch.all(mask[outside] == 0)
    assert set(torch.unique(mask).tolist()) == {-1.0, 0.0, 1.0}


def test_fractional_edges_weight_cells_by_covered_fraction() -> None:
    box = torch.tensor([[10.0, 4.0, 30.0, 16.0]])  # x from 1.25 to 3.75 cells, y from 0.5 to 2 cells
    mask = _full_masks(box, "binary", 0.0, (4, 5))[0]
    assert mask[0, 1].item() == pytest.approx(0.75 * 0.5)
    assert mask[1, 2].item() == pytest.approx(1.0)
    assert mask[1, 3].item() == pytest.approx(0.75)
    assert mask[2, 2].item() == pytest.approx(0.0)


@pytest.mark.parametrize("box", [[0.0, 0.0, 40.0, 40.0], [200.0, 210.0, 240.0, 240.0], [0.0, 100.0, 240.0, 130.0],
                                 [0.0, 0.0, 240.0, 240.0]])
def test_rings_touching_borders_are_clipped_not_wrapped(box: list[float]) -> None:
    mask = _full_masks(torch.tensor([box]), "ternary", 1 / 3, (30, 30))[0].numpy()
    np.testing.assert_allclose(mask, reference_mask(box, "ternary", 1 / 3, 8, (30, 30)), atol=1 / 16)
    if box == [0.0, 0.0, 40.0, 40.0]:  # the original code's negative-index wrap put -1 on the far side
        assert np.all(mask[20:, :] == 0) and np.all(mask[:, 20:] == 0)


@settings(max_examples=80, deadline=None)
@given(
    st.floats(-20, 150),
    st.floats(-20, 150),
    st.floats(1, 120),
    st.floats(1, 120),
    st.sampled_from(["binary", "expanded", "ternary"]),
    st.sampled_from([0.0, 1 / 6, 1 / 3, 1.0]),
)
def test_masks_equal_supersampled_reference(x: float, y: float, w: float, h: float, variant: str, alpha: float) -> None:
    box = [x, y, x + w, y + h]
    mask = _full_masks(torch.tensor([box], dtype=torch.float64), variant, alpha, (20, 20))[0].numpy()
    # exact coverage vs a 16x16 supersampling: they differ by at most one sample row/column per edge
    np.testing.assert_allclose(mask, reference_mask(box, variant, alpha, 8, (20, 20)), atol=2.5 / 16)
    assert mask.min() >= -1 - 1e-9 and mask.max() <= 1 + 1e-9


def test_masks_are_built_on_windows_consistently() -> None:
    boxes = torch.tensor([[30.0, 20.0, 70.0, 64.0], [100.0, 100.0, 150.0, 120.0]])
    full = _full_masks(boxes, "ternary", 1 / 3, (24, 24))
    windows = instance_windows(boxes, torch.tensor([0, 0]), 8, (24, 24), margin=3)
    part = box_masks(boxes, "ternary", 1 / 3, 8, windows.origin, windows.size)
    h, w = windows.size
    for i in range(2):
        x0, y0 = windows.origin[i].tolist()
        assert torch.allclose(part[i], full[i, y0 : y0 + h, x0 : x0 + w])


def test_gather_windows_reads_the_right_cells() -> None:
    features = torch.arange(2 * 3 * 6 * 7, dtype=torch.float32).reshape(2, 3, 6, 7)
    boxes = torch.tensor([[8.0, 8.0, 16.0, 16.0], [40.0, 32.0, 56.0, 48.0]])
    windows = instance_windows(boxes, torch.tensor([1, 0]), 8, (6, 7), margin=1)
    cut = gather_windows(features, windows.image_index, windows.origin, windows.size)
    h, w = windows.size
    for i, b in enumerate([1, 0]):
        x0, y0 = windows.origin[i].tolist()
        assert torch.equal(cut[i], features[b, :, y0 : y0 + h, x0 : x0 + w])


def _busy_branch(channels: int = 16) -> SegmentationBranch:
    """A branch whose biases are far from zero, so its background differs from zero and from place to place."""
    torch.manual_seed(0)
    branch = SegmentationBranch(channels, (16, 8)).eval()
    with torch.no_grad():
        for name, p in branch.named_parameters():
            p.add_(torch.randn_like(p) * (0.2 if name.endswith("bias") else 0.02))
    return branch


def _exact_region(box: torch.Tensor, map_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Cells (x1, y1, x2, y2) of the box plus one cell (what the paste reads), inside the map."""
    x1, y1 = int(box[0] // 8) - 1, int(box[1] // 8) - 1
    x2, y2 = int(-(-box[2] // 8)) + 1, int(-(-box[3] // 8)) + 1
    return max(x1, 0), max(y1, 0), min(x2, map_size[1]), min(y2, map_size[0])


def _windowed_equals_whole_map(branch, masking, features, boxes, index,
                               exact: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the branch per group of windows and on the whole map; compare on every exact region. Returns the spans."""
    map_size = tuple(features.shape[-2:])
    whole = whole_map_windows(index, map_size)
    with torch.no_grad():
        full_out = branch(masking(features, boxes, index, whole))
        if exact:
            first, last = exact_spans(boxes, masking.support(boxes), branch.reach, 8, map_size)
        else:
            first, last = margin_spans(boxes, 8, map_size, branch.receptive_radius + 1)
        for group in window_groups(first, last):
            windows = place_windows(first[group], last[group], index[group], map_size)
            region = masking(features, boxes[group], index[group], windows)
            out = branch(region, windows) if exact else branch(region)
            for j, i in enumerate(group.tolist()):
                x1, y1, x2, y2 = _exact_region(boxes[i], map_size)
                x0, y0 = windows.origin[j].tolist()
                assert x0 <= x1 and y0 <= y1 and x2 <= x0 + windows.size[1] and y2 <= y0 + windows.size[0]
                torch.testing.assert_close(
                    out[j, :, y1 - y0 : y2 - y0, x1 - x0 : x2 - x0], full_out[i, :, y1:y2, x1:x2], rtol=1e-4, atol=1e-5
                )
    return first, last


BORDER_BOXES = [
    [10.0, 12.0, 90.0, 60.0],
    [200.0, 250.0, 310.0, 318.0],
    [0.0, 0.0, 30.0, 300.0],  # left and top border
    [300.5, 2.25, 320.0, 17.75],  # right and top border, fractional edges
    [0.0, 290.0, 320.0, 320.0],  # full width at the bottom
    [150.3, 150.7, 170.1, 171.9],  # small, mid-map
    [0.0, 0.0, 320.0, 320.0],  # the whole image
]


@pytest.mark.parametrize("variant", ["binary", "expanded", "ternary"])
@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("channels", [16, 12])  # 12: the first residual block projects its skip
def test_branch_on_windows_matches_branch_on_whole_map_inside_boxes(variant: str, exact: bool, channels: int) -> None:
    branch = _busy_branch(channels)
    assert (branch.res1.project is None) == (channels == 16)
    features = torch.relu(torch.randn(2, channels, 40, 40))
    boxes = torch.tensor(BORDER_BOXES)
    index = torch.tensor([0, 1, 1, 0, 1, 0, 1])
    masking = RoIMasking(variant, 1 / 3, 8)
    _windowed_equals_whole_map(branch, masking, features, boxes, index, exact)
    single = torch.tensor([[100.0, 100.0, 140.0, 130.0]])
    first, last = margin_spans(single, 8, (40, 40), branch.receptive_radius + 1)
    tight_first, tight_last = exact_spans(single, masking.support(single), branch.reach, 8, (40, 40))
    margin_cells, exact_cells = (last - first).prod().item(), (tight_last - tight_first).prod().item()
    assert margin_cells < 40 * 40 / 2  # a small box costs a fraction of the map
    assert exact_cells < 0.75 * margin_cells  # and the tight window much less again


def test_background_varies_near_the_border_and_small_maps_work() -> None:
    branch = _busy_branch()
    background = branch.background((40, 40))
    assert [tuple(b.shape) for b in background][0] == (16, 19, 19)
    deep = background[-1]  # the logits' input sees 8 cells: from 8 cells in, it is the middle's value
    assert torch.equal(deep[:, 8, 9], deep[:, 9, 9]) and torch.equal(deep[:, 10, 9], deep[:, 9, 9])
    assert not torch.allclose(deep[:, 0, 9], deep[:, 9, 9]) and not torch.allclose(deep[:, 9, 18], deep[:, 9, 9])
    features = torch.relu(torch.randn(1, 16, 12, 16))  # smaller than the background map, not square
    boxes = torch.tensor([[40.0, 30.0, 70.0, 60.0], [0.0, 0.0, 20.0, 96.0], [100.0, 10.0, 128.0, 40.0]])
    _windowed_equals_whole_map(branch, RoIMasking("ternary", 1 / 3, 8), features, boxes,
                               torch.zeros(3, dtype=torch.long), True)


def test_background_is_recomputed_when_weights_change() -> None:
    branch = _busy_branch()
    with torch.no_grad():
        before = [b.clone() for b in branch.background((40, 40))]
        assert branch.background((40, 40))[3] is branch.background((40, 40))[3]  # kept while nothing changes
        branch.res1.conv1.bias.add_(1.0)
        after = branch.background((40, 40))
    assert torch.equal(before[0], after[0]) and not torch.allclose(before[3], after[3])


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 300), st.floats(0, 300), st.floats(1, 320), st.floats(1, 320)), min_size=1,
             max_size=6),
    st.sampled_from(["binary", "expanded", "ternary"]),
)
def test_exact_windows_are_exact_and_never_larger(raw: list[tuple[float, float, float, float]], variant: str) -> None:
    boxes = _boxes_from(raw)
    branch = _busy_branch()
    masking = RoIMasking(variant, 1 / 3, 8)
    features = torch.relu(torch.randn(1, 16, 40, 40))
    first, last = _windowed_equals_whole_map(branch, masking, features, boxes,
                                             torch.zeros(len(boxes), dtype=torch.long), True)
    wide_first, wide_last = margin_spans(boxes, 8, (40, 40), branch.receptive_radius + 1)
    assert bool((first >= wide_first).all() and (last <= wide_last).all() and (last > first).all())


def _boxes_from(raw: list[tuple[float, float, float, float]]) -> torch.Tensor:
    """Boxes (x, y, w, h) drawn by hypothesis, clipped to a 320 image, at least half a pixel wide."""
    boxes = torch.tensor([[x, y, min(x + w, 320.0), min(y + h, 320.0)] for x, y, w, h in raw])
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 0.5)
    return boxes


def test_separable_max_equals_max_pool() -> None:
    x = torch.randn(3, 5, 9, 11)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), value=float("-inf"))
    assert torch.equal(max3x3(padded), torch.nn.functional.max_pool2d(x, 3, stride=1, padding=1))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 300), st.floats(0, 300), st.floats(1, 320), st.floats(1, 320)), min_size=1,
                max_size=30))
def test_window_groups_partition_instances_with_bounded_waste(raw: list[tuple[float, float, float, float]]) -> None:
    boxes = _boxes_from(raw)
    first, last = margin_spans(boxes, 8, (40, 40), 10)
    groups = window_groups(first, last, group_cost=128)
    members = torch.cat(groups).sort().values
    assert torch.equal(members, torch.arange(len(boxes)))
    wasted = 0
    for group in groups:
        shared = place_windows(first[group], last[group], torch.zeros(len(group), dtype=torch.long), (40, 40))
        for j, i in enumerate(group.tolist()):
            w, h = (last[i] - first[i]).tolist()
            assert shared.size[0] >= h and shared.size[1] >= w
            assert torch.equal(shared.own_hi[j] - shared.own_lo[j], last[i] - first[i])
            assert (bool((shared.own_lo[j] >= 0).all()) and shared.own_hi[j][0] <= shared.size[1]
                    and shared.own_hi[j][1] <= shared.size[0])
            wasted += shared.size[0] * shared.size[1] - w * h
    assert wasted < 128 * (len(boxes) - len(groups)) + 1  # each instance that joins a group wastes < group_cost cells


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 300), st.floats(0, 300), st.floats(1, 320), st.floats(1, 320)), min_size=1,
                max_size=30))
def test_training_groups_bound_each_members_waste(raw: list[tuple[float, float, float, float]]) -> None:
    boxes = _boxes_from(raw)
    first, last = margin_spans(boxes, 8, (40, 40), 10)
    groups = ratio_groups(first, last, waste=1.5)
    assert torch.equal(torch.cat(groups).sort().values, torch.arange(len(boxes)))
    for group in groups:
        shared = place_windows(first[group], last[group], torch.zeros(len(group), dtype=torch.long), (40, 40))
        for i in group.tolist():
            w, h = (last[i] - first[i]).tolist()
            assert shared.size[0] >= h and shared.size[1] >= w and shared.size[0] * shared.size[1] <= 1.5 * w * h


def test_pooling_baselines_give_fixed_size_regions() -> None:
    features = torch.relu(torch.randn(1, 4, 20, 20))
    boxes = torch.tensor([[10.0, 10.0, 90.0, 50.0]])
    for variant in ("roialign", "roipool"):
        region = RoIMasking(variant, output_size=14)(features, boxes, torch.tensor([0]), None)
        assert region.shape == (1, 4, 14, 14)
    with pytest.raises(ValueError, match="needs the windows"):
        RoIMasking("ternary")(features, boxes, torch.tensor([0]), None)


@pytest.mark.parametrize("variant", ["roialign", "roipool"])
def test_pooling_baselines_run_under_bfloat16_autocast(variant: str) -> None:
    """--cpu-bf16 (and CUDA autocast) hand the pooling bfloat16 features with float32 boxes: roi_pool refused them."""
    features = torch.relu(torch.randn(1, 4, 20, 20))
    boxes = torch.tensor([[10.0, 10.0, 90.0, 50.0]])
    reference = RoIMasking(variant, output_size=7)(features, boxes, torch.tensor([0]), None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        region = RoIMasking(variant, output_size=7)(features.bfloat16(), boxes, torch.tensor([0]), None)
    assert region.shape == (1, 4, 7, 7)
    torch.testing.assert_close(region.float(), reference, atol=0.05, rtol=0.02)


def test_mask_loss_ignores_unweighted_cells() -> None:
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1, 0, 0] = 10.0  # confident foreground where the target is background...
    targets = torch.zeros(1, 2, 2)
    weights = torch.tensor([[[0.0, 1.0], [1.0, 1.0]]])  # ...but that cell is outside the box
    assert mask_loss(logits, targets, weights).item() == pytest.approx(np.log(2), rel=1e-5)
    assert mask_loss(logits[:0], targets[:0], weights[:0]).item() == 0.0


def test_paste_masks_maps_windows_to_original_pixels() -> None:
    probs = torch.ones(1, 1, 4, 4)
    window = torch.tensor([[0.0, 0.0, 32.0, 32.0]])
    box = torch.tensor([[8.0, 16.0, 24.0, 32.0]])  # network-input pixels
    pasted = paste_masks(probs, window, box, scale=(0.5, 0.5), out_size=(64, 64))[0]
    expected = torch.zeros(64, 64)
    expected[32:64, 16:48] = 1  # the box in original pixels (scale 0.5 network px per pixel)
    assert torch.equal(pasted, expected)


def test_branch_groupings_partition_instances_as_named() -> None:
    from s4net.models.windows import branch_groups, resolve_grouping

    assert resolve_grouping("auto", torch.device("cpu")) == "cost"
    assert resolve_grouping("auto", torch.device("cuda")) == "single"  # reasoned, not yet measured
    assert resolve_grouping("coarse", torch.device("cuda")) == "coarse"
    with pytest.raises(ValueError, match="'fewest' is not one of"):
        resolve_grouping("fewest", torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    wh = 8.0 + torch.rand(30, 2, generator=generator) * 300.0
    xy = torch.rand(30, 2, generator=generator) * (320.0 - wh)
    first, last = margin_spans(torch.cat([xy, xy + wh], 1), 8, (40, 40), 2)
    found = {name: branch_groups(first, last, name) for name in ("auto", "cost", "coarse", "single")}
    for groups in found.values():
        assert torch.equal(torch.cat(groups).sort().values, torch.arange(30))
    assert [g.tolist() for g in found["auto"]] == [g.tolist() for g in window_groups(first, last)]
    assert len(found["single"]) == 1 and len(found["cost"]) > len(found["coarse"])
    assert [g.tolist() for g in found["coarse"]] == [g.tolist() for g in window_groups(first, last, 4096.0)]
