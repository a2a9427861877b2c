"""Class activation maps (CAMs) from a classifier trained on image keywords alone.

The attention half of the paper's Table 5 row "Att + Sal": a ResNet whose last stage
keeps stride 16 (or, not in the paper, EfficientNet-Lite0 dilated to stride 16), a 1x1
convolution giving one activation map per VOC class, and the image's class scores as the
maps' spatial mean (Zhou et al., CVPR 2016). It is trained with a multi-label loss on the
keywords of the images to be labelled: it never sees a mask or a box. :mod:`pipeline.cues`
thresholds its maps inside the saliency foreground (the ``cam_saliency`` cue).

``wsss train-cam`` writes, under its output folder: ``train_config.json``,
``metrics.jsonl``, ``checkpoints/last.pt`` (full state, atomic; a killed run resumes
from it and sees the same batches) and the final ``cam.pt`` (weights and config,
loads with ``weights_only=True``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from pipeline.classes import FOREGROUND_CLASSES
from pipeline.cues.cam_config import CamConfig
from pipeline.datasets.imagenet import ImageNetSubset
from s4net.config import weights_mismatch
from s4net.data.training import device_images
from s4net.engine import LoopSettings, Step, global_mean, poly_factor, run_training
from s4net.errors import InputError
from s4net.io.atomic import write_json
from s4net.io.states import StateFormat, fit_weights, read_state, save_state
from s4net.models.backbones import EFFICIENTNET_LITE0, build_backbone, efficientnet_lite0, normalise

log = logging.getLogger(__name__)

CHECKPOINT = StateFormat("wsss-cam-classifier", 1, "CAM classifier", hint="train one with `wsss train-cam`")
def squashed(image: np.ndarray, size: int) -> np.ndarray:
    """uint8[size, size, 3]: the image resized to a square (aspect not kept), as the classifier sees it."""
    return np.array(Image.fromarray(image).resize((size, size), Image.BILINEAR))


class CamNet(nn.Module):
    """ResNet (last stage at stride 16) -> one activation map per class; image logits are the maps' mean.

    ``backbone`` ``efficientnet_lite0`` (a deviation from the paper) dilates its last stages instead (timm's
    ``output_stride=16``); ``pretrained="package"`` loads its packaged ImageNet weights. Inputs are normalised
    by :func:`~s4net.models.backbones.normalise` with the backbone's name (:meth:`normalise`).
    """

    def __init__(self, backbone: str = "resnet18", size: int = 160, pretrained: str | None = None,
                 classes: int = len(FOREGROUND_CLASSES)) -> None:
        super().__init__()
        if backbone == EFFICIENTNET_LITE0:
            self.body = efficientnet_lite0(norm="bn", pretrained=pretrained, output_stride=16)
        else:
            self.body = build_backbone(backbone, norm="bn", pretrained=pretrained)
            for module in self.body.stages[3][0].modules():  # the stride-2 convolutions of the last stage's first block
                if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
                    module.stride = (1, 1)
        self.classifier = nn.Conv2d(self.body.out_channels[-1], classes, kernel_size=1, bias=False)
        self.backbone, self.size = backbone, size

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1], Tensor[B, 3, H, W] -> the input statistics the backbone expects."""
        return normalise(images, self.backbone)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images [B, 3, H, W] -> (logits [B, C], maps [B, C, H/16, W/16])."""
        maps = self.classifier(self.body(images)["c5"])
        return maps.mean(dim=(2, 3)), maps

    @torch.no_grad()
    def keyword_maps(self, image: np.ndarray, keywords: Sequence[str]) -> np.ndarray:
        """float32[len(keywords), H, W] in [0, 1]: each keyword's CAM at image resolution, over its own maximum.

        The image is resized to ``size`` x ``size`` as in training; the maps of the image and
        of its mirror are averaged.
        """
        height, width = image.shape[:2]
        device = next(self.parameters()).device
        batch = torch.from_numpy(squashed(image, self.size)).permute(2, 0, 1).float().div(255).unsqueeze(0).to(device)
        batch = torch.cat([batch, batch.flip(-1)])
        columns = [FOREGROUND_CLASSES.index(k) for k in keywords]
        _, maps = self(self.normalise(batch))
        maps = F.relu(maps[:, columns].float())
        maps = (maps[0] + maps[1].flip(-1)) / 2
        maps = F.interpolate(maps[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        peak = maps.flatten(1).amax(dim=1).clamp_min(1e-6).view(-1, 1, 1)
        return (maps / peak).cpu().numpy().astype(np.float32)


def keyword_targets(keywords: Sequence[str]) -> torch.Tensor:
    """float[20]: 1 for each of the image's keywords."""
    target = torch.zeros(len(FOREGROUND_CLASSES))
    for name in keywords:
        target[FOREGROUND_CLASSES.index(name)] = 1.0
    return target


def split_holdout(count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) image indices: a seeded ``fraction`` held out, at least one image kept to train on."""
    order = np.random.default_rng(seed).permutation(count).tolist()
    held = min(int(round(count * fraction)), count - 1)
    return sorted(order[held:]), sorted(order[:held])


class KeywordImages(torch.utils.data.Dataset):
    """(image, keyword targets) of a subset; items are ``(index, flip)`` pairs from :class:`SeededKeywordBatches`."""

    def __init__(self, subset: ImageNetSubset, size: int) -> None:
        self.subset, self.size = subset, size

    def __len__(self) -> int:
        return len(self.subset)

    def __getitem__(self, item: tuple[int, bool]) -> tuple[torch.Tensor, torch.Tensor]:
        index, flip = item
        sample = self.subset[index]
        resized = squashed(sample.image, self.size)
        image = torch.from_numpy(np.ascontiguousarray(resized[:, ::-1] if flip else resized)).permute(2, 0, 1)
        return image, keyword_targets(sample.keywords)  # uint8: scaled on the device (CamTask.losses)


class SeededKeywordBatches(torch.utils.data.Sampler):
    """Batches of ``(index, flip)`` from ``start`` to ``iterations``; each batch a pure function of
    (seed, iteration)."""

    def __init__(self, indices: Sequence[int], batch_size: int, seed: int, start: int, iterations: int) -> None:
        self.indices, self.batch_size, self.seed = np.asarray(indices), batch_size, seed
        self.start, self.iterations = start, iterations

    def __len__(self) -> int:
        return self.iterations - self.start

    def __iter__(self):
        for iteration in range(self.start, self.iterations):
            rng = np.random.default_rng([self.seed, iteration])
            picks = rng.choice(self.indices, size=self.batch_size, replace=len(self.indices) < self.batch_size)
            flips = rng.random(self.batch_size) < 0.5
            yield [(int(i), bool(f)) for i, f in zip(picks, flips, strict=True)]


def save_cam(path: str | os.PathLike, model: CamNet, **state: Any) -> None:
    """Write the model's config and weights (and any extra ``state``) atomically."""
    save_state(path, CHECKPOINT, config={"backbone": model.backbone, "size": model.size}, model=model.state_dict(),
               **state)


def read_cam(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw contents of a CAM classifier file, checked."""
    return read_state(path, CHECKPOINT, map_location)


def load_cam(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[CamNet, dict[str, Any]]:
    """The CAM classifier (eval mode) and its training report."""
    payload = read_cam(path, map_location)
    try:
        model = CamNet(**payload["config"])
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(path, f"bad config in CAM classifier: {exc}") from None
    fit_weights(model, payload["model"], path)
    return model.to(map_location).eval(), dict(payload.get("report") or {})


@torch.no_grad()
def keyword_accuracy(model: CamNet, dataset: KeywordImages, indices: Sequence[int], device: torch.device,
                     batch_size: int = 16) -> float | None:
    """Share of images whose top-k classes (k = their keyword count) are exactly their keywords."""
    if not indices:
        return None
    model.eval()
    hits = 0
    for start in range(0, len(indices), batch_size):
        items = [dataset[(i, False)] for i in indices[start:start + batch_size]]
        images = device_images(torch.stack([image for image, _ in items]), device)
        targets = torch.stack([target for _, target in items])
        logits, _ = model(model.normalise(images))
        for scores, target in zip(logits.float().cpu(), targets, strict=True):
            k = int(target.sum())
            hits += int(set(scores.topk(k).indices.tolist()) == set(target.nonzero().flatten().tolist()))
    model.train()
    return hits / len(indices)


class CamTask:
    """The CAM classifier on the engine: seeded keyword batches, multi-label loss over the global batch."""

    def __init__(self, images: str | os.PathLike, keywords: str | os.PathLike | None, cfg: CamConfig,
                 pretrained: str | None) -> None:
        self.subset = ImageNetSubset(images, keywords)
        if len(self.subset) < 2:
            raise InputError(self.subset.root,
                             f"{len(self.subset)} keyword-tagged images: too few to train a CAM classifier")
        mismatch = weights_mismatch(cfg.backbone, None if pretrained is None else str(pretrained))
        if mismatch:
            raise InputError("--pretrained", mismatch)
        self.cfg, self.pretrained = cfg, pretrained
        self.train_ids, self.held_ids = split_holdout(len(self.subset), cfg.holdout, cfg.seed)
        self.images = KeywordImages(self.subset, cfg.size)
        self.key = {**asdict(cfg), "pretrained": str(pretrained) if pretrained else None, "images": len(self.subset)}
        self.report: dict[str, Any] | None = None  # set by finish (rank 0, once the last step is done)

    def build_model(self) -> nn.Module:
        return CamNet(self.cfg.backbone, self.cfg.size, self.pretrained)

    def dataset(self) -> torch.utils.data.Dataset:
        return self.images

    def batches(self, start: int) -> torch.utils.data.Sampler:
        cfg = self.cfg
        return SeededKeywordBatches(self.train_ids, cfg.batch_size, cfg.seed, start, cfg.iterations)

    def collate(self, items: list[Any]) -> Any:
        return torch.utils.data.default_collate(items)

    def lr_factor(self, iteration: int) -> float:
        return poly_factor(iteration, self.cfg.iterations, 0.9)

    def losses(self, model: nn.Module, batch: Any, step: Step) -> dict[str, torch.Tensor]:
        images, targets = batch
        images, targets = device_images(images, step.device), targets.to(step.device, non_blocking=True)
        logits, _ = model(normalise(images, self.cfg.backbone))  # model may be wrapped (DDP, compile)
        total = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="sum")
        return {"loss": global_mean(total, targets.numel())}

    def resume_key(self) -> dict[str, Any]:
        return self.key

    def record(self) -> dict[str, Any]:
        return {**self.key, "train_images": len(self.train_ids), "heldout_images": len(self.held_ids)}

    def save(self, path: Path, model: nn.Module, **state: Any) -> None:
        save_cam(path, model, **state)

    def read(self, path: Path, map_location: torch.device | str) -> dict[str, Any]:
        return read_cam(path, map_location=map_location)

    def finish(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        """The held-out keyword accuracy, in ``report.json`` and in the final file."""
        report = {"heldout_keyword_accuracy": keyword_accuracy(model, self.images, self.held_ids, device),
                  "heldout_images": len(self.held_ids), "train_images": len(self.train_ids),
                  "iterations": self.cfg.iterations}
        log.info("CAM classifier: held-out keyword accuracy %s on %d images", report["heldout_keyword_accuracy"],
                 len(self.held_ids))
        self.report = report
        return {"report": report}


def train_cam(
    images: str | os.PathLike, out: str | os.PathLike, keywords: str | os.PathLike | None = None,
    config: CamConfig = CamConfig(), pretrained: str | None = None, device: str = "auto", checkpoint_every: int = 200,
    log_every: int = 20, progress: bool = True, workers: int | None = None, sync_bn: bool = False, amp: bool = True,
    compile: bool = False, cpu_bf16: bool = False,
) -> Path:
    """Train (or resume) the CAM classifier on a keyword-tagged image set; returns the path of ``cam.pt``.

    ``workers``: data-loading processes per rank (None: 0 on CPU, a share of the host's cores on CUDA);
    ``compile``: run the model through ``torch.compile``; ``amp``: mixed precision on CUDA; ``cpu_bf16``: bfloat16
    autocast on CPU (faster steps where oneDNN has bfloat16).

    ``report.json`` beside it holds the held-out keyword accuracy. Under torchrun every rank calls it.
    """
    task = CamTask(images, keywords, config, pretrained)
    settings = LoopSettings(
        out=Path(out), final_name="cam.pt", iterations=config.iterations, batch_size=config.batch_size, lr=config.lr,
        momentum=config.momentum, weight_decay=config.weight_decay, seed=config.seed, device=device, amp=amp,
        cpu_bf16=cpu_bf16, checkpoint_every=checkpoint_every, log_every=log_every, workers=workers, sync_bn=sync_bn,
        compile=compile, progress=progress, desc="train CAM classifier",
    )
    final = run_training(task, settings)
    if task.report is not None:  # trained here (rank 0): report.json after cam.pt
        write_json(Path(out) / "report.json", task.report, indent=2)
    return final
