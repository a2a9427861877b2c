"""Dense CRF refinement of proxy labels (Krähenbühl & Koltun 2011, through ``pydensecrf``).

The unary term is minus the log of the cue's class probabilities (background and
the image's own classes only); the pairwise terms are a Gaussian (smoothness) and a
bilateral one (pixels of similar colour nearby take the same label). Pixels that
were ignore stay ignore: the CRF only moves labels where the cue had one.
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

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"CRFConfig.iterations={self.iterations} must be >= 1")
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
            if getattr(self, name) <= 0:
                raise ValueError(f"CRFConfig.{name}={getattr(self, name)} must be > 0")
        for name in ("gaussian_compat", "bilateral_compat"):
            if getattr(self, name) < 0:
                raise ValueError(f"CRFConfig.{name}={getattr(self, name)} must be >= 0")
        if not 0.0 < self.min_probability < 1.0:
            raise ValueError(f"CRFConfig.min_probability={self.min_probability} must be in (0, 1)")


def crf_inference(image: np.ndarray, probabilities: np.ndarray, config: CRFConfig) -> np.ndarray:
    """float32[n, H, W] marginals after mean-field inference.

    Args:
        image: uint8[H, W, 3] RGB.
        probabilities: float[n, H, W] per-label probabilities (n >= 1).
    """
    import pydensecrf.densecrf as dcrf

    labels, height, width = probabilities.shape
    if image.shape[:2] != (height, width):
        raise ValueError(f"image is {image.shape[1]}x{image.shape[0]} but probabilities are {width}x{height}")
    if labels == 1:
        return np.ones_like(probabilities, dtype=np.float32)
    probs = np.clip(probabilities.astype(np.float32), config.min_probability, 1.0)
    probs /= probs.sum(axis=0, keepdims=True)
    crf = dcrf.DenseCRF2D(width, height, labels)
    crf.setUnaryEnergy(np.ascontiguousarray(-np.log(probs).reshape(labels, -1)))
    crf.addPairwiseGaussian(sxy=config.gaussian_sxy, compat=config.gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=config.bilateral_sxy, srgb=config.bilateral_srgb,
        rgbim=np.array(image, dtype=np.uint8, order="C"),  # a writable copy
        compat=config.bilateral_compat,
    )
    return np.asarray(crf.inference(config.iterations), dtype=np.float32).reshape(labels, height, width)


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
