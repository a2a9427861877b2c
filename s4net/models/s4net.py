"""S4Net: backbone + FPN + single-stage detector + RoIMasking + segmentation branch.

The call contract is torchvision's detection one: ``model(images, targets)``
returns a dict of losses in train mode and, in eval mode, one dict per image with
``boxes`` Tensor[K, 4] (original pixels), ``scores`` Tensor[K] and ``masks``
Tensor[K, 1, H, W] (foreground probabilities at the image's own resolution), all float32
whatever autocast the call runs under.

Runtime settings change no weight and are not stored in checkpoints: ``min_score``
(the branch runs only for proposals scoring at least this), ``branch_grouping``
(how the branch's windows share canvases) and :meth:`S4Net.compile_dense`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from s4net.config import S4NetConfig
from s4net.engine.devices import cudnn_autotuning
from s4net.engine.distributed import global_mean
from s4net.models.backbones import build_backbone, input_stats
from s4net.models.box_ops import AnchorGenerator, BoxCoder, Matcher
from s4net.models.detection import DetectionHead, box_loss, detection_targets, objectness_loss, select_proposals
from s4net.models.fpn import FeaturePyramid
from s4net.models.fusion import fold_batchnorm
from s4net.models.roi_masking import RoIMasking, box_masks
from s4net.models.seg_branch import SegmentationBranch, paste_masks, weighted_ce
from s4net.models.windows import (
    BRANCH_GROUPINGS,
    branch_groups,
    exact_spans,
    gather_windows,
    margin_spans,
    place_windows,
    ratio_groups,
    whole_map_windows,
)

SEG_STRIDE = 8
PASTE_BUDGET = 1 << 23  # pixels x instances pasted per resample call


@dataclass(frozen=True)
class BranchOutput:
    """Segmentation-branch logits of a group of instances that share one window size.

    Attributes:
        members: Tensor[n] long, positions of the instances among the boxes given to ``segment``.
        logits: Tensor[n, 2, h, w] background/foreground logits at stride 8.
        extent: Tensor[n, 4] (x1, y1, x2, y2) network-input pixels each logit map covers.
    """

    members: Tensor
    logits: Tensor
    extent: Tensor


class S4Net(nn.Module):
    """Single-stage salient-instance segmentation (Fan et al., CVPR 2019)."""

    def __init__(self, config: S4NetConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.backbone = build_backbone(config.backbone, config.norm, config.pretrained)
        self.fpn = FeaturePyramid(
            self.backbone.out_channels, config.fpn_channels, config.fpn_levels, config.fpn_upsample, config.p6_pool
        )
        self.anchor_generator = AnchorGenerator(config.strides, config.anchor_ratios, config.anchor_size_per_stride)
        self.head = DetectionHead(config.fpn_channels, config.head_channels, len(config.anchor_ratios))
        self.box_coder = BoxCoder()
        self.matcher = Matcher(config.positive_iou, config.negative_iou, config.match_low_quality)
        pad = config.compress_kernel // 2
        self.compress = nn.Conv2d(config.fpn_channels, config.compress_channels, config.compress_kernel, padding=pad)
        nn.init.kaiming_normal_(self.compress.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.compress.bias)
        self.roi_masking = RoIMasking(config.masking, config.alpha, SEG_STRIDE, config.roi_output_size)
        self.branch = SegmentationBranch(config.compress_channels, config.branch_channels)
        mean, std = input_stats(config.backbone)  # the statistics the backbone's ImageNet weights expect
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self._anchor_cache: dict[tuple, tuple[Tensor, list[int]]] = {}
        self.inference_only = False
        self.channels_last = False
        self.min_score = 0.0
        self.branch_grouping = "auto"
        self._compiled_dense: Callable[[Tensor], tuple[Tensor, Tensor, Tensor, list[tuple[int, int]]]] | None = None

    @property
    def min_score(self) -> float:
        """Proposals scoring below this are dropped before the segmentation branch (0: keep all, the default).

        Like torchvision's ``box_score_thresh``: the branch and the paste run only for the
        proposals kept, and only those are returned. In [0, 1).
        """
        return self._min_score

    @min_score.setter
    def min_score(self, value: float) -> None:
        value = float(value)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"min_score={value} must be in [0, 1) (0 keeps every proposal)")
        self._min_score = value

    @property
    def branch_grouping(self) -> str:
        """How the inference branch's windows share canvases, one of ``BRANCH_GROUPINGS`` (default ``auto``:
        the CPU's cost model on CPU, one canvas per call on a GPU).

        See :func:`s4net.models.windows.branch_groups`; the outputs are the same whichever runs.
        """
        return self._branch_grouping

    @branch_grouping.setter
    def branch_grouping(self, value: str) -> None:
        if value not in BRANCH_GROUPINGS:
            raise ValueError(f"branch_grouping={value!r} is not one of {list(BRANCH_GROUPINGS)}")
        self._branch_grouping = value

    def train(self, mode: bool = True) -> "S4Net":
        if mode and self.inference_only:
            raise RuntimeError("this S4Net had its BatchNorm folded for inference; it cannot be trained any more")
        return super().train(mode)

    def fold_batchnorm(self) -> "S4Net":
        """Fold every BatchNorm into the conv before it (eval mode, faster inference; no training after)."""
        self.eval()
        fold_batchnorm(self)
        self.inference_only = True
        return self

    def for_inference(self, channels_last: bool = True, min_score: float = 0.0) -> "S4Net":
        """Folded BatchNorm and, by default, channels-last weights and inputs (about 10% faster on CPU).

        ``min_score`` sets :attr:`min_score`. This is how ``s4net predict`` and ``s4net evaluate``
        run the model; it cannot be trained after.
        """
        self.min_score = min_score
        self.fold_batchnorm()
        if channels_last:
            self.to(memory_format=torch.channels_last)
            self.channels_last = True
        return self

    def compile_dense(self, **options: Any) -> "S4Net":
        """Run the dense part (:meth:`dense`: backbone, FPN, head, compression conv) through
        ``torch.compile(**options)`` in eval mode.

        The proposals and the branch's windows change with every image, so they stay eager.
        Compiling happens on the first call (and again for a new batch size): it pays off
        over many batches, not one. Not stored in checkpoints; training runs eager.
        """
        self._compiled_dense = torch.compile(self.dense, **options)
        return self

    # ----------------------------------------------------------------- inputs
    def preprocess(self, images: list[Tensor] | Tensor) -> tuple[Tensor, list[tuple[int, int]]]:
        """Float images in [0, 1] ([3, H, W] each, or one [B, 3, H, W] tensor) -> normalised batch at ``image_size``."""
        size = self.config.image_size
        if isinstance(images, Tensor) and images.dim() == 4:
            original = [tuple(images.shape[-2:])] * images.shape[0]
            batch = images
            if batch.shape[-2:] != (size, size):
                batch = F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        else:
            original, resized = [], []
            for image in images:
                if image.dim() != 3 or image.shape[0] != 3:
                    raise ValueError(f"each image must be a float Tensor[3, H, W], got shape {tuple(image.shape)}")
                original.append(tuple(image.shape[-2:]))
                if image.shape[-2:] != (size, size):
                    image = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False,
                                          antialias=True)[0]
                resized.append(image)
            batch = torch.stack(resized)
        if not batch.is_floating_point():
            raise ValueError("images must be float tensors scaled to [0, 1]")
        return (batch - self.mean) / self.std, original

    def _anchors(self, sizes: list[tuple[int, int]], device: torch.device) -> tuple[Tensor, list[int]]:
        key = (tuple(sizes), str(device))
        if key not in self._anchor_cache:
            per_level = self.anchor_generator(sizes, device)
            self._anchor_cache[key] = (torch.cat(per_level), [a.shape[0] for a in per_level])
        return self._anchor_cache[key]

    # ---------------------------------------------------------------- forward
    def dense(self, batch: Tensor) -> tuple[Tensor, Tensor, Tensor, list[tuple[int, int]]]:
        """The dense part on a normalised batch Tensor[B, 3, S, S]: backbone, FPN, head, compression conv.

        Returns (objectness Tensor[B, A], deltas Tensor[B, A, 4], stride-8 branch features
        Tensor[B, C, S/8, S/8], (h, w) of each pyramid level).
        """
        levels = self.fpn(self.backbone(batch))
        pyramid = list(levels.values())
        logits, deltas = self.head(pyramid)
        features = F.relu(self.compress(levels["p3"]))
        return logits, deltas, features, [tuple(p.shape[-2:]) for p in pyramid]

    def _run_dense(self, images: list[Tensor] | Tensor) -> tuple[Tensor, Tensor, Tensor, list, list[tuple[int, int]]]:
        batch, original_sizes = self.preprocess(images)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        dense = self.dense if self._compiled_dense is None or self.training else self._compiled_dense
        logits, deltas, features, level_sizes = dense(batch)
        return logits, deltas, features, [tuple(int(v) for v in s) for s in level_sizes], original_sizes

    def forward(self, images: list[Tensor] | Tensor, targets: list[dict[str, Tensor]] | None = None):
        """Train mode: dict of losses (needs ``targets`` with ``boxes`` and ``masks``). Eval: detections per image."""
        if self.training and targets is None:
            raise ValueError("S4Net in train mode needs targets (boxes, masks); call model.eval() for inference")
        logits, deltas, features, level_sizes, original_sizes = self._run_dense(images)
        anchors, num_per_level = self._anchors(level_sizes, features.device)
        if self.training:
            return self._losses(logits, deltas, anchors, features, targets, original_sizes)
        return self._detect(logits, deltas, anchors, num_per_level, features, original_sizes)

    def branch_spans(self, boxes: Tensor, map_size: tuple[int, int], exact: bool) -> tuple[Tensor, Tensor]:
        """(first, last) cells (x, y) of each box's branch window (see :mod:`s4net.models.windows`).

        ``exact`` gives the tight windows padded with the layers' background; otherwise
        the box plus the receptive radius and one cell, zero-padded. Both leave the
        outputs on the box and one cell around it as on the whole map.
        """
        if exact:
            return exact_spans(boxes, self.roi_masking.support(boxes), self.branch.reach, SEG_STRIDE, map_size)
        return margin_spans(boxes, SEG_STRIDE, map_size, self.branch.receptive_radius + 1)

    def segment(self, features: Tensor, boxes: Tensor, image_index: Tensor, exact: bool = False) -> list[BranchOutput]:
        """Branch logits for boxes (network-input pixels), one :class:`BranchOutput` per canvas size.

        With ``branch_crop`` each instance runs on a window around its box (tight and
        background-padded when ``exact``, as inference does; the receptive-radius
        margin otherwise, as training does); instances of similar window size share
        one forward (grouped by :attr:`branch_grouping` when ``exact``, by the training
        rule otherwise). Without it every instance runs on the whole map.
        """
        n = boxes.shape[0]
        if self.roi_masking.is_pooling:
            region = self.roi_masking(features, boxes, image_index, None)
            return [BranchOutput(torch.arange(n, device=boxes.device), self.branch(region), boxes)]
        map_size = tuple(features.shape[-2:])
        if not self.config.branch_crop:
            windows = whole_map_windows(image_index, map_size)
            region = self.roi_masking(features, boxes, image_index, windows)
            return [BranchOutput(torch.arange(n, device=boxes.device), self.branch(region),
                                 windows.pixel_boxes(SEG_STRIDE))]
        first, last = self.branch_spans(boxes, map_size, exact)
        background = self.branch.background(map_size) if exact else None
        outputs = []
        groups = branch_groups(first, last, self.branch_grouping) if exact else ratio_groups(first, last)
        for members in groups:
            windows = place_windows(first[members], last[members], image_index[members], map_size)
            region = self.roi_masking(features, boxes[members], image_index[members], windows)
            if exact and windows.size != map_size:
                logits = self.branch(region, windows, background)
            else:  # margin windows, or canvases as large as the map: the network's own padding is exact
                logits = self.branch(region)
            outputs.append(BranchOutput(members, logits, windows.pixel_boxes(SEG_STRIDE)))
        return outputs

    def _scaled_targets(self, targets: list[dict[str, Tensor]],
                        original_sizes: list[tuple[int, int]]) -> tuple[list[Tensor], list[Tensor]]:
        size = self.config.image_size
        boxes, masks = [], []
        for target, (h, w) in zip(targets, original_sizes, strict=True):
            scale = torch.tensor([size / w, size / h, size / w, size / h], device=target["boxes"].device)
            boxes.append(target["boxes"].float() * scale)
            m = target["masks"].float()
            if m.shape[-2:] != (size, size) and m.shape[0]:
                m = F.interpolate(m[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
            masks.append(m.reshape(-1, size, size))
        return boxes, masks

    def _losses(self, logits, deltas, anchors, features, targets, original_sizes) -> dict[str, Tensor]:
        cfg = self.config
        gt_boxes, gt_masks = self._scaled_targets(targets, original_sizes)
        labels, box_targets = detection_targets(anchors, gt_boxes, self.matcher, self.box_coder)
        logits, deltas = logits.float(), deltas.float()  # losses in float32 under any autocast
        pos, neg = objectness_loss(logits, labels, cfg.hard_negatives)
        losses = {
            "loss_objectness": cfg.objectness_weight * (pos + neg),
            "loss_box": box_loss(deltas, box_targets, labels, cfg.box_loss_beta),
        }
        boxes = torch.cat(gt_boxes)
        image_index = torch.cat([torch.full((len(b),), i, dtype=torch.long, device=boxes.device)
                                 for i, b in enumerate(gt_boxes)])
        masks = torch.cat(gt_masks)
        total = weight = features.sum() * 0.0
        for out in self.segment(features, boxes, image_index):
            seg_targets, weights = self.mask_targets(masks[out.members], boxes[out.members], out.extent,
                                                     out.logits.shape[-2:])
            part, part_weight = weighted_ce(out.logits, seg_targets, weights)
            total, weight = total + part, weight + part_weight
        losses["loss_mask"] = cfg.mask_weight * global_mean(total, weight)
        return losses

    def mask_targets(self, masks: Tensor, boxes: Tensor, extent: Tensor,
                     grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """The segmentation branch's training targets: soft foreground and inside-box weights per instance.

        Args:
            masks: Tensor[N, S, S] ground-truth masks at the network's input size.
            boxes: Tensor[N, 4] their boxes (x1, y1, x2, y2) in input pixels.
            extent: Tensor[N, 4] the pixel box each output grid covers (the branch window, or the box itself
                for the RoIAlign/RoIPool baselines).
            grid: (h, w) of the branch's output per instance.

        Returns:
            (targets, weights), each Tensor[N, h, w]: the mask's share of each cell, and 1 where the loss counts.
        """
        n = masks.shape[0]
        if n == 0:
            empty = masks.new_zeros((0, *grid))
            return empty, empty
        rois = torch.cat([torch.arange(n, device=masks.device, dtype=masks.dtype)[:, None], extent], dim=1)
        if self.roi_masking.is_pooling:
            # Mask R-CNN's targets: the full-resolution GT mask RoIAligned into each box
            targets = roi_align(masks[:, None], rois, grid, spatial_scale=1.0, sampling_ratio=2, aligned=True)[:, 0]
            return targets.clamp(0, 1), torch.ones_like(targets)
        # RoIMasking: area-average the mask over stride-8 cells, then read each window.
        cells = F.avg_pool2d(masks[:, None], SEG_STRIDE)[:, 0]
        origin = (extent[:, :2] / SEG_STRIDE).round().long()
        targets = gather_windows(cells[:, None], torch.arange(n, device=masks.device), origin, tuple(grid))[:, 0]
        weights = box_masks(boxes, "binary", 0.0, SEG_STRIDE, origin, tuple(grid))
        return targets, weights

    @torch.no_grad()
    def _detect(self, logits, deltas, anchors, num_per_level, features, original_sizes) -> list[dict[str, Tensor]]:
        cfg = self.config
        size = cfg.image_size
        proposals = select_proposals(
            logits.float(), deltas.float(), anchors, num_per_level, self.box_coder, (size, size),
            cfg.pre_nms_top_n, cfg.nms_iou, cfg.detections_per_image, cfg.min_box_size,
        )
        if self.min_score > 0:
            proposals = [(boxes[scores >= self.min_score], scores[scores >= self.min_score])
                         for boxes, scores in proposals]
        masks = self._instance_masks(features, [boxes for boxes, _ in proposals], original_sizes)
        results = []
        for ((img_boxes, scores), (h, w), img_masks) in zip(proposals, original_sizes, masks, strict=True):
            back = torch.tensor([w / size, h / size, w / size, h / size], device=img_boxes.device)
            results.append({"boxes": img_boxes.float() * back, "scores": scores.float(), "masks": img_masks[:, None]})
        return results

    def _instance_masks(self, features: Tensor, boxes_per_image: Sequence[Tensor],
                        original_sizes: list[tuple[int, int]]) -> list[Tensor]:
        """Tensor[K_i, H_i, W_i] float32 masks of each image's boxes (network-input pixels): branch, then paste."""
        size = self.config.image_size
        device = features.device
        boxes = torch.cat([b.float() for b in boxes_per_image])
        image_index = torch.cat([torch.full((len(b),), i, dtype=torch.long, device=device)
                                 for i, b in enumerate(boxes_per_image)])
        local = torch.cat([torch.arange(len(b), device=device) for b in boxes_per_image])
        pasted = [torch.zeros((len(b), h, w), dtype=torch.float32, device=device)
                  for b, (h, w) in zip(boxes_per_image, original_sizes, strict=True)]
        if not len(boxes):
            return pasted
        with cudnn_autotuning(False):  # the branch's canvases change shape with every image; the dense part keeps it
            outputs = self.segment(features, boxes, image_index, exact=True)
        for out in outputs:
            probs = torch.softmax(out.logits.float(), dim=1)[:, 1:2]
            owner = image_index[out.members]
            for i in owner.unique().tolist():
                mine = (owner == i).nonzero()[:, 0]
                h, w = original_sizes[i]
                step = max(1, PASTE_BUDGET // max(1, h * w))
                for start in range(0, len(mine), step):
                    part = mine[start : start + step]
                    slots = local[out.members[part]]
                    pasted[i][slots] = paste_masks(probs[part], out.extent[part], boxes[out.members[part]],
                                                   (size / w, size / h), (h, w))
        return pasted

    @torch.inference_mode()
    def masks_for_boxes(self, images: list[Tensor] | Tensor, boxes: Sequence[Tensor]) -> list[Tensor]:
        """The masks :meth:`predict` would give on boxes the caller fixes (no proposals, no :attr:`min_score`).

        Args:
            images: float images in [0, 1], as for :meth:`predict`.
            boxes: per image, Tensor[K_i, 4] (x1, y1, x2, y2) in the image's own pixels.

        Returns:
            per image, Tensor[K_i, 1, H_i, W_i] float32 foreground probabilities (0 outside each box).
        """
        count = images.shape[0] if isinstance(images, Tensor) and images.dim() == 4 else len(images)
        if len(boxes) != count:
            raise ValueError(f"{len(boxes)} box tensors for {count} images; give one Tensor[K, 4] per image")
        for b in boxes:
            if b.dim() != 2 or b.shape[-1] != 4:
                raise ValueError(f"boxes must be Tensor[K, 4] (x1, y1, x2, y2) per image, got shape {tuple(b.shape)}")
        self.eval()
        _, _, features, _, original_sizes = self._run_dense(images)
        size = self.config.image_size
        scaled = []
        for b, (h, w) in zip(boxes, original_sizes, strict=True):
            scale = torch.tensor([size / w, size / h, size / w, size / h], device=features.device)
            scaled.append(b.to(features.device, torch.float32) * scale)
        return [m[:, None] for m in self._instance_masks(features, scaled, original_sizes)]

    @torch.inference_mode()
    def predict(self, images: list[Tensor] | Tensor) -> list[dict[str, Tensor]]:
        """Inference on float images in [0, 1]; switches to eval mode itself."""
        self.eval()
        return self(images)

