"""The single-stage detection branch: shared head, Eq. 2 objectness loss, box loss, proposals."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms, clip_boxes_to_image, remove_small_boxes

from s4net.engine.distributed import global_mean
from s4net.models.box_ops import NEGATIVE, POSITIVE, BoxCoder, Matcher


class DetectionHead(nn.Module):
    """A 3x3 conv + ReLU shared by every level, then sibling 3x3 objectness and box convs.

    ``forward`` takes the pyramid levels and returns ``(objectness, deltas)``:
    Tensor[B, sum_l H_l*W_l*A] logits and Tensor[B, sum_l H_l*W_l*A, 4], levels
    concatenated in order and cells in (y, x, anchor) order like the anchors.
    """

    def __init__(self, in_channels: int, channels: int, num_anchors: int, prior: float = 0.01) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.objectness = nn.Conv2d(channels, num_anchors, 3, padding=1)
        self.deltas = nn.Conv2d(channels, 4 * num_anchors, 3, padding=1)
        for conv in (self.conv, self.objectness, self.deltas):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.objectness.bias, -math.log((1 - prior) / prior))
        self.num_anchors = num_anchors

    def forward(self, levels: list[Tensor]) -> tuple[Tensor, Tensor]:
        logits, deltas = [], []
        for x in levels:
            t = F.relu(self.conv(x))
            b = x.shape[0]
            logits.append(self.objectness(t).permute(0, 2, 3, 1).reshape(b, -1))
            deltas.append(self.deltas(t).permute(0, 2, 3, 1).reshape(b, -1, 4))
        return torch.cat(logits, 1), torch.cat(deltas, 1)


def objectness_loss(logits: Tensor, labels: Tensor, hard_negatives: int | None = None) -> tuple[Tensor, Tensor]:
    """Eq. 2: positives and negatives averaged separately, so the many negatives do not dominate.

    Args:
        logits: Tensor[B, A] objectness logits.
        labels: Tensor[B, A] with 1 positive, 0 negative, -1 ignored.
        hard_negatives: keep only the k negatives of highest loss per image
            (the original code's OHEM, k=256); None averages over all of them.

    Returns:
        (positive term, negative term); each is 0 when its set is empty. The means are over the global
        batch under torchrun (:func:`~s4net.engine.distributed.global_mean`).
    """
    logits = logits.float()
    positive = labels == POSITIVE
    negative = labels == NEGATIVE
    pos_loss = F.softplus(-logits)  # -log p
    neg_loss = F.softplus(logits)  # -log (1 - p)
    pos_term = global_mean(pos_loss[positive].sum(), positive.sum())
    if hard_negatives is None:
        neg_term = global_mean(neg_loss[negative].sum(), negative.sum())
    else:
        masked = torch.where(negative, neg_loss, torch.full_like(neg_loss, -1.0))
        k = min(hard_negatives, masked.shape[1])
        top = masked.topk(k, dim=1).values
        keep = top >= 0
        neg_term = global_mean(top[keep].sum(), keep.sum())
    return pos_term, neg_term


def box_loss(deltas: Tensor, targets: Tensor, labels: Tensor, beta: float) -> Tensor:
    """Smooth-L1 over positive anchors, summed over coordinates, averaged over positives."""
    positive = labels == POSITIVE
    loss = F.smooth_l1_loss(deltas[positive].float(), targets[positive], beta=beta, reduction="sum")
    return global_mean(loss, positive.sum())


def detection_targets(
    anchors: Tensor, gt_boxes: list[Tensor], matcher: Matcher, coder: BoxCoder
) -> tuple[Tensor, Tensor]:
    """Anchor labels Tensor[B, A] and box-delta targets Tensor[B, A, 4] for a batch."""
    labels, targets = [], []
    for boxes in gt_boxes:
        label, matched = matcher(boxes, anchors)
        labels.append(label)
        if boxes.numel():
            targets.append(coder.encode(boxes[matched], anchors))
        else:
            targets.append(torch.zeros_like(anchors))
    return torch.stack(labels), torch.stack(targets)


def select_proposals(
    logits: Tensor,
    deltas: Tensor,
    anchors: Tensor,
    num_per_level: list[int],
    coder: BoxCoder,
    image_size: tuple[int, int],
    pre_nms_top_n: int,
    nms_iou: float,
    keep: int,
    min_size: float,
) -> list[tuple[Tensor, Tensor]]:
    """Decode, clip, take the top-k per level, NMS (one batched call for the batch), keep the best.

    Returns per image ``(boxes Tensor[K, 4], scores Tensor[K])``, best first.
    """
    batch = logits.shape[0]
    device = logits.device
    tops = []
    offset = 0
    for count in num_per_level:
        k = min(pre_nms_top_n, count)
        tops.append(logits[:, offset : offset + count].topk(k, dim=1).indices + offset)
        offset += count
    index = torch.cat(tops, dim=1)  # [B, K]
    scores = torch.sigmoid(logits.gather(1, index).float())
    chosen = deltas.gather(1, index[..., None].expand(-1, -1, 4))
    boxes = coder.decode(chosen.reshape(-1, 4), anchors[index.reshape(-1)]).reshape(batch, -1, 4)
    boxes = clip_boxes_to_image(boxes, image_size)
    flat_boxes = boxes.reshape(-1, 4)
    flat_scores = scores.reshape(-1)
    image_of = torch.arange(batch, device=device).repeat_interleave(boxes.shape[1])
    valid = remove_small_boxes(flat_boxes, min_size)
    flat_boxes, flat_scores, image_of = flat_boxes[valid], flat_scores[valid], image_of[valid]
    kept = batched_nms(flat_boxes, flat_scores, image_of, nms_iou)  # sorted by score
    results = []
    kept_image = image_of[kept]
    for b in range(batch):
        mine = kept[kept_image == b][:keep]
        results.append((flat_boxes[mine], flat_scores[mine]))
    return results
