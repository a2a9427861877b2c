"""Dense CRF refinement of proxy labels (Krähenbühl & Koltun 2011, through ``pydensecrf``).

The unary term is minus the log of the cue's class probabilities (background and
the image's own classes only); the pairwise terms are a Gaussian (smoothness) and a
bilateral one (pixels of similar colour nearby take the same label). Pixels that
were ignore stay ignore: the CRF only moves labels where the cue had one.

Its cost grows with the pixels and the mean-field steps: ``CRFConfig.scale`` runs it on a
smaller copy of the image (kernel widths shrunk alike, marginals resized back) and
``CRFConfig.iterations`` sets the steps; ``bench/crf_knobs.py`` measures both against mIoU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pipeline.classes import IGNORE_INDEX


@dataclass(frozen=True)
class CRFConfig:
    """Dense CRF parameters (defaults: the common VOC values of the pydensecrf examples).

    Attributes:
        iterations: mean-field steps.
        scale: the CRF runs at this fraction of the image's width and height (1: full
            resolution), its pixel widths scaled alike; the marginals are resized back.
        gaussian_sxy, gaussian_compat: smoothness kernel width (px) and weight.
        bilateral_sxy, bilateral_srgb, bilateral_compat: appearance kernel widths
            (px, colour levels) and weight.
        min_probability: unary probabilities are clipped here before the log.
    """

    iterations: int = 10
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0
    min_probability: float = 1e-5
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"CRFConfig.iterations={self.iterations} must be >= 1")
        if not 0.0 < self.scale <= 1.0:
            raise ValueError(f"CRFConfig.scale={self.scale} must be in (0, 1]")
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
            if getattr(self, name) <= 0:
                raise ValueError(f"CRFConfig.{name}={getattr(self, name)} must be > 0")
        for name in ("gaussian_compat", "bilateral_compat"):
            if getattr(self, name) < 0:
                raise ValueError(f"CRFConfig.{name}={getattr(self, name)} must be >= 0")
        if not 0.0 < self.min_probability < 1.0:
            raise ValueError(f"CRFConfig.min_probability={self.min_probability} must be in (0, 1)")


def _resize_planes(planes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32[n, h, w] -> float32[n, H, W] by bilinear resampling (antialiased when shrinking); size is (H, W)."""
    from PIL import Image

    height, width = size
    return np.stack([
        np.asarray(Image.fromarray(plane, mode="F").resize((width, height), Image.Resampling.BILINEAR))
        for plane in np.asarray(planes, dtype=np.float32)
    ])


def crf_inference(image: np.ndarray, probabilities: np.ndarray, config: CRFConfig) -> np.ndarray:
    """float32[n, H, W] marginals after mean-field inference.

    Args:
        image: uint8[H, W, 3] RGB.
        probabilities: float[n, H, W] per-label probabilities (n >= 1).
    """
    import pydensecrf.densecrf as dcrf
    from PIL import Image

    labels, height, width = probabilities.shape
    if image.shape[:2] != (height, width):
        raise ValueError(f"image is {image.shape[1]}x{image.shape[0]} but probabilities are {width}x{height}")
    if labels == 1:
        return np.ones_like(probabilities, dtype=np.float32)
    probs = np.clip(probabilities.astype(np.float32), config.min_probability, 1.0)
    rgb, shape = image, (height, width)
    if config.scale < 1.0:
        shape = (max(1, round(height * config.scale)), max(1, round(width * config.scale)))
        small = Image.fromarray(np.asarray(image, dtype=np.uint8)).resize(shape[::-1], Image.Resampling.BILINEAR)
        rgb = np.asarray(small)
        probs = np.clip(_resize_planes(probs, shape), config.min_probability, 1.0)
    probs /= probs.sum(axis=0, keepdims=True)
    crf = dcrf.DenseCRF2D(shape[1], shape[0], labels)
    crf.setUnaryEnergy(np.ascontiguousarray(-np.log(probs).reshape(labels, -1)))
    crf.addPairwiseGaussian(sxy=config.gaussian_sxy * config.scale, compat=config.gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=config.bilateral_sxy * config.scale, srgb=config.bilateral_srgb,
        rgbim=np.array(rgb, dtype=np.uint8, order="C"),  # a writable copy
        compat=config.bilateral_compat,
    )
    marginals = np.asarray(crf.inference(config.iterations), dtype=np.float32).reshape(labels, *shape)
    return marginals if shape == (height, width) else _resize_planes(marginals, (height, width))


def refine_labels(
    image: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, label_ids: Sequence[int], config: CRFConfig
) -> np.ndarray:
    """uint8[H, W]: ``labels`` with every non-ignore pixel set to the CRF's most likely label.

    Args:
        image: uint8[H, W, 3] RGB.
        labels: uint8[H, W] proxy label (255 ignore, kept as it is).
        probabilities: float[n, H, W] the cue's probabilities of ``label_ids``.
        label_ids: the class index of each probability plane (0 for background).
    """
    if len(label_ids) != probabilities.shape[0]:
        raise ValueError(f"{probabilities.shape[0]} probability planes but {len(label_ids)} label ids")
    marginals = crf_inference(image, probabilities, config)
    refined = np.asarray(label_ids, dtype=np.uint8)[np.argmax(marginals, axis=0)]
    return np.where(labels == IGNORE_INDEX, IGNORE_INDEX, refined).astype(np.uint8)
