"""``wsss evaluate``: a trained segmenter on a VOC-layout split, mIoU over the 21 classes."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline.classes import NUM_CLASSES
from pipeline.cues.crf import CRFConfig, crf_inference
from pipeline.datasets.voc import VOCSegmentation, write_voc_label
from pipeline.segmenter.metrics import confusion_matrix, summarise
from pipeline.segmenter.model import load_segmenter
from s4net.models.backbones import normalise_imagenet

log = logging.getLogger(__name__)
STRIDE = 16  # DeepLab's output stride: inputs are padded to a multiple of it


def _scale_views(model: torch.nn.Module, image: torch.Tensor, scale: float, flip: bool) -> torch.Tensor:
    """Tensor[V, classes, H, W] softmax of the image at ``scale`` (V=2 with its flip), aligned and resized back.

    The resized image is flipped before padding, so both views are padded on their own
    right and bottom and cropped to the same pixels: aligned for any size.
    """
    height, width = image.shape[-2:]
    h, w = max(STRIDE, round(height * scale)), max(STRIDE, round(width * scale))
    resized = F.interpolate(image, size=(h, w), mode="bilinear", align_corners=False) if (h, w) != (height, width) \
        else image
    views = torch.cat([resized, resized.flip(-1)]) if flip else resized
    batch = F.pad(normalise_imagenet(views), (0, (-w) % STRIDE, 0, (-h) % STRIDE))  # zero: the mean, normalised
    probs = torch.softmax(model(batch)[..., :h, :w].float(), dim=1)
    if flip:
        probs = torch.stack([probs[0], probs[1].flip(-1)])
    if (h, w) != (height, width):
        probs = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)
    return probs


@torch.inference_mode()
def predict_probabilities(model: torch.nn.Module, image: np.ndarray, device: torch.device,
                          scales: Sequence[float] = (1.0,), flip: bool = False) -> np.ndarray:
    """float32[classes, H, W] softmax averaged over ``scales`` (and their horizontal flips, with ``flip``)."""
    if not scales or min(scales) <= 0:
        raise ValueError(f"test scales must be > 0, got {list(scales)}")
    tensor = torch.from_numpy(np.array(image, order="C")).to(device).permute(2, 0, 1)[None].float().div_(255.0)
    total = sum(_scale_views(model, tensor, scale, flip).mean(0) for scale in scales)
    return (total / len(scales)).cpu().numpy()


def evaluate_segmenter(
    checkpoint: str | os.PathLike,
    voc_root: str | os.PathLike,
    split: str = "val",
    device: str = "cpu",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    crf: CRFConfig | None = None,
    predictions: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Scores of a segmenter checkpoint on a VOC split (and its predicted label PNGs, when asked)."""
    model, config = load_segmenter(checkpoint, map_location=device)
    dataset = VOCSegmentation(voc_root, split)
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES + 1), dtype=np.int64)
    for index in tqdm(range(len(dataset)), disable=not progress, desc=f"evaluate {split}", unit="img",
                      dynamic_ncols=True):
        sample = dataset[index]
        image_id = sample.image_id
        probs = predict_probabilities(model, sample.image, torch.device(device), scales, flip)
        if crf is not None:
            probs = crf_inference(sample.image, probs, crf)
        prediction = np.argmax(probs, axis=0).astype(np.uint8)
        matrix += confusion_matrix(prediction, sample.label)
        if predictions is not None:
            write_voc_label(Path(predictions) / f"{image_id}.png", prediction)
    summary = summarise(matrix)
    summary.update(images=len(dataset), split=split, checkpoint=str(checkpoint), arch=config.arch,
                   encoder=config.encoder, scales=list(scales), flip=flip, crf=crf is not None,
                   confusion=matrix.tolist())
    return summary
