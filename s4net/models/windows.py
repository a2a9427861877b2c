"""Where the segmentation branch runs: one window of the stride-8 map per instance.

Two rules place a window around a box (both give exact outputs on the box and one
cell around it, which the bilinear paste reads):

* :func:`margin_spans`: the box plus the branch's whole receptive radius. The
  cells past the window are zero-padded, which is harmless because they are too
  far from the box to reach it.
* :func:`exact_spans`: much tighter. RoIMasking zeroes the features outside the
  ring, so wherever a layer's receptive field holds no ring, the layer holds its
  *background*: what the branch computes on an all-zero map (one constant per
  channel, except near the map's border). A window side may sit wherever, for
  every layer, the cells past it are either out of reach of the box or hold the
  background, which the padding then gives them (see
  :mod:`s4net.models.region_padding`).

Instances whose windows have similar sizes share one canvas (one forward); each
keeps its own span inside the canvas; the rest is computed but never read. How
eagerly they share is a runtime choice (:func:`branch_groups`): fewer, larger
canvases suit a GPU, a cost model of the CPU suits the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Windows:
    """Equal-size windows (canvases) of a feature map, one per instance.

    Attributes:
        image_index: Tensor[N] long, which image of the batch each window reads.
        origin: Tensor[N, 2] long (x0, y0), top-left cell of each canvas in the map.
        size: (height, width) in cells, the same for all canvases.
        own_lo, own_hi: Tensor[N, 2] long (x, y), the instance's own span inside its
            canvas (``own_hi`` exclusive).
        map_size: (height, width) of the whole map.
    """

    image_index: Tensor
    origin: Tensor
    size: tuple[int, int]
    own_lo: Tensor
    own_hi: Tensor
    map_size: tuple[int, int]

    def pixel_boxes(self, stride: float) -> Tensor:
        """Tensor[N, 4] the canvases' extents (x1, y1, x2, y2) in input pixels."""
        h, w = self.size
        xy = self.origin.to(torch.float32) * stride
        return torch.cat([xy, xy + torch.tensor([w * stride, h * stride], device=xy.device)], dim=1)


def _cells(lo: Tensor, hi: Tensor, stride: float, map_wh: Tensor) -> tuple[Tensor, Tensor]:
    """First and (exclusive) last cell (x, y) touched by the pixel intervals, inside the map."""
    first = torch.floor(lo / stride).long().clamp(min=0)
    last = torch.minimum(torch.ceil(hi / stride).long(), map_wh)
    return torch.minimum(first, map_wh - 1), torch.maximum(last, first + 1)


def margin_spans(boxes: Tensor, stride: float, map_size: tuple[int, int], margin: int) -> tuple[Tensor, Tensor]:
    """(first, last) Tensor[N, 2] long cells (x, y) of each box plus ``margin`` cells, inside the map."""
    map_wh = torch.tensor([map_size[1], map_size[0]], device=boxes.device)
    first, last = _cells(boxes[:, :2], boxes[:, 2:], stride, map_wh)
    return (first - margin).clamp(min=0), torch.minimum(last + margin, map_wh)


def exact_spans(
    boxes: Tensor, support: Tensor, reach: tuple[int, ...], stride: float, map_size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """(first, last) Tensor[N, 2] long cells (x, y), ``last`` exclusive: the smallest exact windows.

    A side may sit where, for every spatial layer, either the padded cells past it
    are out of reach of the box and one cell around it, or no non-zero masked
    feature lies in their receptive field (so they hold the background the padding
    gives them). Past the map's border the padding is the network's own.

    Args:
        boxes: Tensor[N, 4] instance boxes in input pixels.
        support: Tensor[N, 4] where the masked features may be non-zero (the box
            for ``binary``, the grown box for ``expanded`` and ``ternary``).
        reach: half-width of each spatial layer of the branch, in order.
        stride: feature stride in pixels.
        map_size: (height, width) of the feature map.
    """
    device = boxes.device
    map_wh = torch.tensor([map_size[1], map_size[0]], device=device)
    lo, hi = _cells(boxes[:, :2], boxes[:, 2:], stride, map_wh)
    need_lo, need_hi = (lo - 1).clamp(min=0), torch.minimum(hi + 1, map_wh)  # exact region
    nonzero_lo, nonzero_hi = _cells(support[:, :2], support[:, 2:], stride, map_wh)
    k = torch.tensor(reach, device=device)[:, None, None]  # [L, 1, 1]
    seen = torch.cumsum(k, 0) - k  # receptive radius of each layer's input
    left = k.sum() - seen  # how far each layer's input still reaches the output
    first = torch.maximum(need_lo[None] - left, nonzero_lo[None] - seen).amin(0).clamp(min=0)
    last = torch.minimum(torch.minimum(need_hi[None] + left, nonzero_hi[None] + seen).amax(0), map_wh)
    return first, last


def place_windows(first: Tensor, last: Tensor, image_index: Tensor, map_size: tuple[int, int]) -> Windows:
    """One canvas size for all spans (the largest), each canvas shifted to stay inside the map."""
    map_h, map_w = map_size
    map_wh = torch.tensor([map_w, map_h], device=first.device)
    n = first.shape[0]
    if n == 0:
        empty = torch.zeros((0, 2), dtype=torch.long, device=first.device)
        return Windows(image_index, empty, (map_h, map_w), empty, empty, (map_h, map_w))
    extent = (last - first).amax(dim=0)
    origin = torch.minimum(first, map_wh - extent)
    return Windows(image_index, origin, (int(extent[1]), int(extent[0])), first - origin, last - origin, (map_h, map_w))


def whole_map_windows(image_index: Tensor, map_size: tuple[int, int]) -> Windows:
    """Every instance on the whole map."""
    n = image_index.shape[0]
    device = image_index.device
    first = torch.zeros((n, 2), dtype=torch.long, device=device)
    last = torch.tensor([map_size[1], map_size[0]], device=device).expand(n, 2)
    return place_windows(first, last, image_index, map_size)


CPU_GROUP_COST = 128.0  # cells: about what one more forward of the branch costs on CPU (measured)
COARSE_GROUP_COST = 4096.0  # cells: a 64x64 canvas; for devices where a forward is a handful of kernel launches
BRANCH_GROUPINGS = ("auto", "cost", "coarse", "single")


def resolve_grouping(grouping: str, device: torch.device) -> str:
    """The grouping ``grouping`` means on ``device``: ``auto`` is ``cost`` on CPU and ``single`` elsewhere.

    On CUDA each extra forward of the branch is a handful of kernel launches while the
    cells a shared canvas wastes cost little, so ``auto`` runs one canvas per call there.
    That choice is reasoned, not yet measured: ``bench/speed.py --groupings`` compares
    the groupings on a GPU.
    """
    if grouping not in BRANCH_GROUPINGS:
        raise ValueError(f"branch grouping {grouping!r} is not one of {list(BRANCH_GROUPINGS)}")
    if grouping == "auto":
        return "cost" if device.type == "cpu" else "single"
    return grouping


def branch_groups(first: Tensor, last: Tensor, grouping: str) -> list[Tensor]:
    """Instances that share one canvas, by a grouping of :data:`BRANCH_GROUPINGS` (``auto`` by ``first``'s device).

    ``cost``: :func:`window_groups` with the CPU cost of a forward; ``coarse``: the same
    with a cost of :data:`COARSE_GROUP_COST` cells (fewer, larger canvases); ``single``:
    every instance on one canvas of the largest span. The branch's outputs on each box
    are the same whichever grouping runs (only the wasted cells differ).
    """
    grouping = resolve_grouping(grouping, first.device)
    if grouping == "single" or first.shape[0] <= 1:
        return [torch.arange(first.shape[0], device=first.device)]
    return window_groups(first, last, CPU_GROUP_COST if grouping == "cost" else COARSE_GROUP_COST)


def window_groups(first: Tensor, last: Tensor, group_cost: float = CPU_GROUP_COST) -> list[Tensor]:
    """Split instances into groups that share one canvas (one forward of the branch).

    A shared canvas runs cells no instance needs; a separate forward has a fixed
    cost, counted as ``group_cost`` cells (about what one forward's overhead costs
    on CPU). Instances are taken largest span first; each joins the group where it
    adds the fewest wasted cells, if fewer than ``group_cost``, or starts a new one.
    Returns index tensors (every instance in exactly one).
    """
    n = first.shape[0]
    if n <= 1:
        return [torch.arange(n, device=first.device)]
    sizes = (last - first).tolist()
    order = sorted(range(n), key=lambda i: -sizes[i][0] * sizes[i][1])
    groups: list[list] = []  # [width, height, members]
    for i in order:
        w, h = sizes[i]
        best, best_waste = None, group_cost
        for group in groups:
            gw, gh, members = group
            grown = max(gw, w) * max(gh, h)
            waste = (len(members) + 1) * grown - len(members) * gw * gh - w * h
            if waste < best_waste:
                best, best_waste = group, waste
        if best is None:
            groups.append([w, h, [i]])
        else:
            best[0], best[1] = max(best[0], w), max(best[1], h)
            best[2].append(i)
    return [torch.tensor(sorted(members), dtype=torch.long, device=first.device) for _, _, members in groups]


def ratio_groups(first: Tensor, last: Tensor, waste: float = 1.5) -> list[Tensor]:
    """Groups whose shared canvas is at most ``waste`` x each member's own area (the training rule).

    Instances are taken largest span first; each joins the first group whose canvas
    already covers its span within that bound, or starts a new one. Training keeps
    this rule so that the demo recipe computes exactly what it was tuned with.
    """
    n = first.shape[0]
    if n <= 1:
        return [torch.arange(n, device=first.device)]
    sizes = (last - first).tolist()
    order = sorted(range(n), key=lambda i: -sizes[i][0] * sizes[i][1])
    groups: list[tuple[int, int, list[int]]] = []  # (width, height, members)
    for i in order:
        w, h = sizes[i]
        for gw, gh, members in groups:
            if w <= gw and h <= gh and gw * gh <= waste * w * h:
                members.append(i)
                break
        else:
            groups.append((w, h, [i]))
    return [torch.tensor(sorted(members), dtype=torch.long, device=first.device) for _, _, members in groups]


def gather_windows(features: Tensor, image_index: Tensor, origin: Tensor, size: tuple[int, int]) -> Tensor:
    """Tensor[N, C, h, w]: windows of ``size`` (h, w) at ``origin`` (x0, y0) cut out of ``features`` [B, C, H, W]
    in one gather."""
    h, w = size
    device = features.device
    ys = origin[:, 1, None] + torch.arange(h, device=device)[None]  # [N, h]
    xs = origin[:, 0, None] + torch.arange(w, device=device)[None]  # [N, w]
    idx = image_index[:, None, None]
    out = features.permute(0, 2, 3, 1)[idx, ys[:, :, None], xs[:, None, :]]  # [N, h, w, C]
    return out.permute(0, 3, 1, 2)
