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
from tqdm import tqdm

from s4net.config import config_from_mapping
from s4net.engine import (
    MetricsLog,
    autocast_context,
    newest_readable_state,
    optimizer_step,
    parameter_groups,
    resolve_device,
    restore_training,
)
from s4net.errors import InputError
from s4net.io.atomic import write_json
from s4net.io.states import StateFormat, fit_weights, read_state, save_state
from s4net.reproduction.variants import PEER_BACKBONES
from s4net.train import TrainConfig, learning_rate_factor

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


def train_peer(cfg: TrainConfig, config: PeerConfig, checkpoint_every: int = 200, progress: bool = True) -> Path:
    """Train (or resume) the peer with S4Net's schedule and batches (``cfg``); returns ``OUT/model_final.pt``.

    ``cfg.model`` (an S4Net config) is not used: ``config`` is the peer's model.
    """
    from s4net.data.coco import SalientInstanceDataset
    from s4net.data.training import SeededBatches, TrainingSet, collate

    device = resolve_device(cfg.device)
    source = SalientInstanceDataset(cfg.annotations, cfg.images)
    out = cfg.out
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)  # only once the inputs are known to be readable
    final_path, last_path, metrics_path = out / "model_final.pt", out / "checkpoints" / "last.pt", out / "metrics.jsonl"
    key = {**cfg.resume_key(), "model": asdict(config)}
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = build_maskrcnn(config).to(device)
    optimizer = torch.optim.SGD(parameter_groups(model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    state, state_path = newest_readable_state([last_path], lambda p: read_peer(p, device))
    start = restore_training(state, key, state_path, model, optimizer, scaler, metrics_path) if state else 0
    write_json(out / "train_config.json", {**cfg.to_dict(), "model": asdict(config), "peer": "torchvision maskrcnn"},
               indent=2)
    if start >= cfg.iterations and final_path.exists():
        return final_path
    sampler = SeededBatches(len(source), cfg.batch_size, cfg.seed, start, cfg.iterations, cfg.hflip, cfg.scale_jitter)
    loader = torch.utils.data.DataLoader(TrainingSet(source, config.size, cache=cfg.cache), batch_sampler=sampler,
                                         collate_fn=collate, num_workers=0)
    model.train()
    bar = tqdm(total=cfg.iterations, initial=start, disable=not progress, desc="train Mask R-CNN peer", unit="it")
    try:
        with metrics_path.open("a", encoding="utf-8") as metrics:
            log_metrics = MetricsLog(metrics, cfg.batch_size, cfg.log_every, cfg.iterations)
            for iteration, (images, targets) in enumerate(loader, start=start):
                factor = learning_rate_factor(iteration, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * factor
                torch.manual_seed(cfg.seed * 1_000_003 + iteration)  # the heads' sampling: a function of the iteration
                with autocast_context(device, True, cfg.cpu_bf16):
                    losses = model(list(images.to(device)), peer_targets(targets, device))
                loss = sum(losses.values())
                if not torch.isfinite(loss):
                    raise RuntimeError(f"Mask R-CNN peer loss is not finite at iteration {iteration}")
                optimizer_step(loss, model, optimizer, scaler, cfg.grad_clip)
                done = iteration + 1
                bar.update(1)
                log_metrics.add(done, cfg.lr * factor, {k: float(v.detach()) for k, v in losses.items()})
                if done % checkpoint_every == 0 or done == cfg.iterations:
                    save_peer(last_path, model, config, optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
                              iteration=done, train=key)
    finally:
        bar.close()
    save_peer(final_path, model, config, iteration=cfg.iterations, train=key)
    return final_path


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
