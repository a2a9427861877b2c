"""The peer row of Tables 1 and 3: torchvision Mask R-CNN trained and scored as S4Net is.

What a user would pick instead of S4Net, under S4Net's own conditions: the same
backbone (from scratch, BatchNorm), the same COCO salient-instance json, the same
input size (images squashed to S x S), the same batches (S4Net's seeded sampler: same
images, flips and zooms in the same order), the same SGD schedule (iterations, lr,
steps, warm-up, weight decay, gradient clipping, bfloat16 autocast on CPU) and class-agnostic (one foreground
class). It is scored by ``s4net evaluate``'s own code (mask mAP@0.5/0.7, all and
occluded images) and its images/s is measured the same way (decoding included).

    s4net peer train --annotations W/salient/train.json --images W/salient/images \\
        --out OUT --backbone resnet18 --size 128 --iterations 2600 --batch-size 8 --lr 0.02 \\
        --lr-steps 2000 2420 --warmup 50 --scale-jitter 0.8 1.25
    s4net peer evaluate --checkpoint OUT/model_final.pt \\
        --annotations W/salient/test.json --images W/salient/images --out OUT/test_metrics.json

Training resumes from ``OUT/checkpoints/last.pt`` (atomic, every ``checkpoint_every`` iterations).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from s4net.config import config_from_mapping
from s4net.data.training import device_images
from s4net.engine import Step, global_mean, resolve_device, run_training
from s4net.errors import InputError
from s4net.io.states import StateFormat, fit_weights, read_state, save_state
from s4net.reproduction.variants import PEER_BACKBONES
from s4net.train import S4NetTask, TrainConfig, loop_settings

log = logging.getLogger(__name__)

CHECKPOINT = StateFormat("maskrcnn-peer", 1, "Mask R-CNN peer checkpoint", hint="train one with `s4net peer train`")


@dataclass(frozen=True)
class PeerConfig:
    """The Mask R-CNN peer model (stored in its checkpoints).

    Attributes:
        backbone: a ResNet of ``PEER_BACKBONES`` with an FPN, from scratch.
        size: square input side; images are squashed to it as S4Net's are.
        detections: boxes kept per image whatever their score, as S4Net's ``detections_per_image``.
    """

    backbone: str = "resnet18"
    size: int = 128
    detections: int = 20

    def __post_init__(self) -> None:
        if self.backbone not in PEER_BACKBONES:
            raise ValueError(f"Mask R-CNN peer backbone {self.backbone!r}: expected one of {list(PEER_BACKBONES)}")
        if self.size < 1 or self.detections < 1:
            raise ValueError(f"PeerConfig needs size >= 1 and detections >= 1; got {self}")


def build_maskrcnn(config: PeerConfig) -> nn.Module:
    """Class-agnostic Mask R-CNN with a ResNet-FPN from scratch (BatchNorm), fixed ``size`` x ``size`` input.

    ``detections`` boxes are kept per image whatever their score, as S4Net keeps its
    ``detections_per_image``.
    """
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    body = resnet_fpn_backbone(backbone_name=config.backbone, weights=None, norm_layer=nn.BatchNorm2d,
                               trainable_layers=5)
    return MaskRCNN(body, num_classes=2, min_size=config.size, max_size=config.size,
                    fixed_size=(config.size, config.size), box_detections_per_img=config.detections,
                    box_score_thresh=0.0)


def save_peer(path: str | os.PathLike, model: nn.Module, config: PeerConfig, **state: Any) -> None:
    """Write the peer's config and weights (and any extra ``state``) atomically."""
    save_state(path, CHECKPOINT, config=asdict(config), model=model.state_dict(), **state)


def read_peer(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw contents of a peer checkpoint, checked."""
    return read_state(path, CHECKPOINT, map_location)


def load_peer(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, PeerConfig]:
    """The peer (eval mode) and its config from a checkpoint."""
    payload = read_peer(path, map_location)
    try:
        config = config_from_mapping(PeerConfig, payload.get("config"))
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"bad config in Mask R-CNN peer checkpoint ({exc})") from None
    model = build_maskrcnn(config)
    fit_weights(model, payload["model"], path)
    return model.to(map_location).eval(), config


def peer_targets(targets: list[dict[str, torch.Tensor]], device: torch.device) -> list[dict[str, torch.Tensor]]:
    """S4Net's training targets (soft masks, boxes) as Mask R-CNN's: binary masks, class 1, no empty boxes."""
    out = []
    for target in targets:
        boxes = target["boxes"]
        keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
        out.append({"boxes": boxes[keep].to(device),
                    "labels": torch.ones(int(keep.sum()), dtype=torch.int64, device=device),
                    "masks": (target["masks"][keep] >= 0.5).to(torch.uint8).to(device)})
    return out


class SeededBalancedSampler:
    """Mask R-CNN's balanced sampling of positives and negatives (anchors or proposals), drawn per image.

    Each image's draw comes from (seed, stage, its position in the run's sample stream), set by
    :meth:`draw_for` before the forward, so the sample does not depend on how the batch is split over
    processes; before any :meth:`draw_for` it draws from torch's generator. ``matched`` labels per
    candidate: >= 1 positive, 0 negative, < 0 ignored (torchvision's convention).
    """

    def __init__(self, per_image: int, positive_fraction: float, stage: int) -> None:
        self.batch_size_per_image, self.positive_fraction, self.stage = per_image, positive_fraction, stage
        self.seed: int | None = None
        self.samples: tuple[int, ...] = ()
        self.picked = self.positives = 0  # of the last call, over its images

    def draw_for(self, seed: int, samples: tuple[int, ...]) -> None:
        self.seed, self.samples = seed, samples

    def _generator(self, image: int) -> torch.Generator | None:
        if self.seed is None or image >= len(self.samples):
            return None
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.stage * 7_919 + self.samples[image])

    def __call__(self, matched: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        positives, negatives = [], []
        self.picked = self.positives = 0
        for image, labels in enumerate(matched):
            generator = self._generator(image)
            pos = torch.nonzero(labels >= 1).flatten()
            neg = torch.nonzero(labels == 0).flatten()
            wanted = min(int(self.batch_size_per_image * self.positive_fraction), pos.numel())
            pos = pos[torch.randperm(pos.numel(), generator=generator)[:wanted].to(pos.device)]
            neg = neg[torch.randperm(neg.numel(), generator=generator)[:min(self.batch_size_per_image - wanted,
                                                                              neg.numel())].to(neg.device)]
            self.picked += pos.numel() + neg.numel()
            self.positives += pos.numel()
            for picked, out in ((pos, positives), (neg, negatives)):
                mask = torch.zeros_like(labels, dtype=torch.uint8)
                mask[picked] = 1
                out.append(mask)
        return positives, negatives


def seeded_samplers(model: nn.Module) -> list[SeededBalancedSampler]:
    """Give the peer's RPN and box head :class:`SeededBalancedSampler` s with their own sizes; returns them."""
    samplers = []
    for stage, owner in enumerate((model.rpn, model.roi_heads)):
        old = owner.fg_bg_sampler
        owner.fg_bg_sampler = SeededBalancedSampler(old.batch_size_per_image, old.positive_fraction, stage)
        samplers.append(owner.fg_bg_sampler)
    return samplers


class PeerTask(S4NetTask):
    """The Mask R-CNN peer on the engine: S4Net's batches and schedule (its task's), the peer's model and losses."""

    def __init__(self, cfg: TrainConfig, config: PeerConfig) -> None:
        super().__init__(cfg)
        self.config, self.size = config, config.size
        self.key = {**cfg.resume_key(), "model": asdict(config)}
        self.samplers: list[SeededBalancedSampler] = []

    def build_model(self) -> nn.Module:
        model = build_maskrcnn(self.config)
        self.samplers = seeded_samplers(model)
        return model

    def losses(self, model: nn.Module, batch: Any, step: Step) -> dict[str, torch.Tensor]:
        images, targets = batch
        for sampler in self.samplers:
            sampler.draw_for(step.seed, step.samples)
        losses = model(list(device_images(images, step.device)), peer_targets(targets, step.device))
        # torchvision averages each loss over this rank's sampled anchors / proposals (the mask loss over its
        # positive proposals); as sums over the global batch's, N processes compute what one does
        anchors, proposals = self.samplers
        counts = {"loss_objectness": anchors.picked, "loss_rpn_box_reg": anchors.picked,
                  "loss_classifier": proposals.picked, "loss_box_reg": proposals.picked,
                  "loss_mask": proposals.positives}
        return {name: global_mean(value * counts[name], counts[name]) for name, value in losses.items()}

    def resume_key(self) -> dict[str, Any]:
        return self.key

    def record(self) -> dict[str, Any]:
        return {**self.cfg.to_dict(), "model": asdict(self.config), "peer": "torchvision maskrcnn"}

    def save(self, path: Path, model: nn.Module, **state: Any) -> None:
        save_peer(path, model, self.config, **state)

    def read(self, path: Path, map_location: torch.device | str) -> dict[str, Any]:
        return read_peer(path, map_location)


def train_peer(cfg: TrainConfig, config: PeerConfig, checkpoint_every: int = 200, progress: bool = True) -> Path:
    """Train (or resume) the peer with S4Net's schedule and batches (``cfg``); returns ``OUT/model_final.pt``.

    ``cfg.model`` (an S4Net config) is not used: ``config`` is the peer's model. Under torchrun every rank
    calls it. Its losses are torchvision's, rescaled to means over the global batch's sampled anchors and
    proposals, and its samples are drawn per image (:class:`SeededBalancedSampler`), so a run on N processes
    computes what the run on one does.
    """
    settings = loop_settings(cfg, progress, desc="train Mask R-CNN peer")
    settings.checkpoint_every = checkpoint_every
    return run_training(PeerTask(cfg, config), settings)


def evaluate_peer(checkpoint: str | os.PathLike, annotations: str | os.PathLike, images: str | os.PathLike,
                  batch_size: int = 4, device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Mask mAP (all and occluded images) and images/s of a trained peer, by ``s4net evaluate``'s code."""
    from s4net.evaluation import evaluate_predictions
    from s4net.inference import predict_annotated

    where = resolve_device(device)
    model, config = load_peer(checkpoint, where)
    start = time.perf_counter()
    document, results = predict_annotated(model, annotations, images, batch_size, where, progress=progress)
    seconds = time.perf_counter() - start
    metrics = evaluate_predictions(document, results, protocol="coco", max_detections=config.detections)
    metrics.update(checkpoint=str(checkpoint), annotations=str(annotations), batch_size=batch_size,
                   images_per_s=len(document["images"]) / seconds if seconds > 0 else None,
                   model="torchvision maskrcnn", **{f"model_{k}": v for k, v in asdict(config).items()})
    return metrics
