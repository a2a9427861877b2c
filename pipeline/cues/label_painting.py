"""Proxy labels from salient-instance cues: class maps with 255 where the cue is unsure.

* :func:`instance_labels` (the method): each labelled instance paints its keyword
  where its mask probability is at least ``foreground`` and it is the most likely
  instance.
* :func:`saliency_labels` (the baseline): the union of the instance masks as one
  class-agnostic saliency map, as saliency-map methods give. It can only name the
  foreground of a single-keyword image; with several keywords its foreground is ignore,
  unless class activation maps split it (the ``cam_saliency`` cue, "Att + Sal").
  :func:`map_saliency_labels` applies the same rule to an outside saliency map cut at one
  threshold; :func:`wsss_bed_labels` is WSSS-BED's fusion rule, for comparison.

Both: background where every salient instance's probability is below
``background``; ignore (255) in between, on rejected instances, and on a band of
``border`` pixels along every boundary between two labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from pipeline.classes import CLASS_INDEX, IGNORE_INDEX


@dataclass(frozen=True)
class ProxyConfig:
    """How cues become labels.

    Attributes:
        foreground: mask probability from which a pixel belongs to an instance.
        background: below this for every salient instance, a pixel is background.
        border: width in pixels of the ignore band along label boundaries (0: none).
        cam_threshold: the normalised class activation a foreground pixel's strongest
            keyword needs to name it (``cam_saliency`` cue, multi-keyword images).
    """

    foreground: float = 0.5
    background: float = 0.2
    border: int = 1
    cam_threshold: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 <= self.background <= self.foreground <= 1.0:
            raise ValueError(f"ProxyConfig needs 0 <= background <= foreground <= 1, got {self.background}, "
                             f"{self.foreground}")
        if self.border < 0:
            raise ValueError(f"ProxyConfig.border={self.border} must be >= 0")
        if not 0.0 <= self.cam_threshold <= 1.0:
            raise ValueError(f"ProxyConfig.cam_threshold={self.cam_threshold} must be in [0, 1]")


def border_band(labels: np.ndarray, width: int) -> np.ndarray:
    """bool[H, W]: pixels within ``width`` of a boundary between two different labels (ignore aside).

    Pixels on both sides of the boundary count, so the band is about ``2 * width`` wide.
    """
    if width == 0:
        return np.zeros(labels.shape, dtype=bool)
    valid = labels != IGNORE_INDEX
    values = labels.astype(np.int16)
    high = ndimage.maximum_filter(np.where(valid, values, -1), size=3, mode="nearest")
    low = ndimage.minimum_filter(np.where(valid, values, 999), size=3, mode="nearest")
    edge = valid & ((high != values) | (low != values))
    return ndimage.binary_dilation(edge, iterations=width - 1) if width > 1 else edge


def class_probabilities(masks: np.ndarray, classes: Sequence[int], present: Sequence[int]) -> np.ndarray:
    """float32[1 + len(present), H, W]: background and each present class's probability.

    A class's probability is the largest mask probability among its instances; the
    background's is one minus the largest of all; columns sum to 1 after normalising.
    Used as the unary term of the dense CRF.
    """
    height, width = masks.shape[-2:]
    probs = np.zeros((1 + len(present), height, width), dtype=np.float32)
    for slot, cls in enumerate(present, start=1):
        members = [m for m, c in zip(masks, classes, strict=True) if c == cls]
        if members:
            probs[slot] = np.max(members, axis=0)
    probs[0] = 1.0 - probs[1:].max(axis=0) if len(present) else 1.0
    return probs / np.clip(probs.sum(axis=0, keepdims=True), 1e-6, None)


def _background(masks: np.ndarray, shape: tuple[int, int], config: ProxyConfig) -> np.ndarray:
    """uint8[H, W]: 0 where every mask is below ``background``, 255 elsewhere."""
    labels = np.full(shape, IGNORE_INDEX, dtype=np.uint8)
    strongest = masks.max(axis=0) if len(masks) else np.zeros(shape, dtype=np.float32)
    labels[strongest < config.background] = 0
    return labels


def instance_labels(
    masks: np.ndarray, instance_keywords: Sequence[str | None], rejected: Sequence[int], config: ProxyConfig,
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """uint8[H, W] proxy label from salient instances (the method).

    Args:
        masks: float[K, H, W] mask probabilities of the salient instances.
        instance_keywords: per instance its keyword, or None.
        rejected: instances whose pixels are ignore where they are the strongest.
        config: thresholds.
        shape: (H, W), needed only when there are no instances.
    """
    shape = tuple(masks.shape[-2:]) if len(masks) else shape
    if shape is None:
        raise ValueError("instance_labels needs shape when there are no instances")
    if len(instance_keywords) != len(masks):
        raise ValueError(f"{len(masks)} masks but {len(instance_keywords)} keywords")
    labels = _background(masks, shape, config)
    labelled = [i for i, k in enumerate(instance_keywords) if k is not None]
    best_prob = np.zeros(shape, dtype=np.float32)
    if labelled:
        best = np.argmax(masks[labelled], axis=0)
        best_prob = np.take_along_axis(masks[labelled], best[None], axis=0)[0]
        classes = np.array([CLASS_INDEX[instance_keywords[i]] for i in labelled], dtype=np.uint8)
        painted = best_prob >= config.foreground
        labels[painted] = classes[best[painted]]
    if len(rejected):
        strongest_rejected = masks[list(rejected)].max(axis=0)
        labels[(strongest_rejected >= config.foreground) & (strongest_rejected >= best_prob)] = IGNORE_INDEX
    labels[border_band(labels, config.border)] = IGNORE_INDEX
    return labels


def _name_foreground(labels: np.ndarray, foreground: np.ndarray, image_keywords: Sequence[str], config: ProxyConfig,
                     keyword_maps: np.ndarray | None) -> None:
    """Paint ``foreground`` (bool[H, W]) in ``labels`` as the saliency cues do (in place): the keyword of a
    single-keyword image; with several, the strongest of ``keyword_maps`` where it reaches
    ``config.cam_threshold``; nothing (left as it is) otherwise."""
    if len(image_keywords) == 1:
        labels[foreground] = CLASS_INDEX[image_keywords[0]]
    elif keyword_maps is not None:
        _check_keyword_maps(keyword_maps, image_keywords, labels.shape)
        classes = np.array([CLASS_INDEX[k] for k in image_keywords], dtype=np.uint8)
        strongest = keyword_maps.argmax(axis=0)
        named = foreground & (keyword_maps.max(axis=0) >= config.cam_threshold)
        labels[named] = classes[strongest[named]]


def _check_keyword_maps(keyword_maps: np.ndarray, image_keywords: Sequence[str], shape: tuple[int, ...]) -> None:
    if keyword_maps.shape != (len(image_keywords), *shape):
        raise ValueError(f"keyword maps of shape {keyword_maps.shape} for {len(image_keywords)} keywords at {shape}")


def saliency_labels(
    masks: np.ndarray, image_keywords: Sequence[str], config: ProxyConfig, shape: tuple[int, int] | None = None,
    keyword_maps: np.ndarray | None = None,
) -> np.ndarray:
    """uint8[H, W] proxy label from the union of the salient instances as one saliency map (the baseline).

    The salient foreground takes the keyword of a single-keyword image; with several
    keywords a class-agnostic map cannot say which is which, so it stays ignore, unless
    ``keyword_maps`` (float[len(image_keywords), H, W] in [0, 1], class activation maps)
    are given: then each foreground pixel takes the keyword whose map is strongest there,
    where that map reaches ``config.cam_threshold``, and stays ignore elsewhere.
    """
    shape = tuple(masks.shape[-2:]) if len(masks) else shape
    if shape is None:
        raise ValueError("saliency_labels needs shape when there are no instances")
    labels = _background(masks, shape, config)
    if len(masks):
        _name_foreground(labels, masks.max(axis=0) >= config.foreground, image_keywords, config, keyword_maps)
    labels[border_band(labels, config.border)] = IGNORE_INDEX
    return labels


def map_saliency_labels(salient: np.ndarray, image_keywords: Sequence[str], config: ProxyConfig,
                        keyword_maps: np.ndarray | None = None) -> np.ndarray:
    """uint8[H, W] proxy label from a binary saliency map (an outside map cut at its threshold), by our rule.

    Background where ``salient`` (bool[H, W]) is False; the salient pixels are named as
    :func:`saliency_labels` names its foreground (the single keyword; or, with several
    keywords, the strongest of ``keyword_maps`` reaching ``config.cam_threshold``; ignore
    otherwise). One threshold, so no uncertain band between background and foreground
    (``config.foreground`` and ``config.background`` are not used); the ``config.border``
    band is ignore as in every cue.
    """
    labels = np.where(salient, IGNORE_INDEX, 0).astype(np.uint8)
    _name_foreground(labels, salient, image_keywords, config, keyword_maps)
    labels[border_band(labels, config.border)] = IGNORE_INDEX
    return labels


def wsss_bed_labels(salient: np.ndarray, image_keywords: Sequence[str], keyword_maps: np.ndarray,
                    cam_threshold: float) -> np.ndarray:
    """uint8[H, W] proxy label by WSSS-BED's fusion of saliency and class activation maps.

    The rule of clovaai/WSSS-BED ``wsss_bed/run.py`` (commit 1271546, Kim et al., "Rethinking
    saliency-guided weakly-supervised semantic segmentation", 2024), with its recommended
    ``--ignore_label True`` (``scripts/cam_voc12.sh``): a background plane ``1 - salient`` and one CAM plane per
    image keyword, CAM values below the activation threshold set to 0, the per-pixel argmax
    (background first, so it wins ties), then salient pixels that came out background set to
    ignore. Equivalently:

    * not salient: background (0), whatever the CAMs say;
    * salient, the strongest keyword's CAM >= ``cam_threshold`` (and > 0): that keyword;
    * salient otherwise (no CAM claims it): ignore (255).

    It differs from ours (:func:`map_saliency_labels`, :func:`saliency_labels`) in that the
    CAM decides every salient pixel, single-keyword images included (ours names a single
    keyword's whole foreground without a CAM), and in having no ignore band along label
    boundaries. WSSS-BED's script uses ``atm_thresh 0.1`` with its CAMs (ours: ``--cam-threshold``).

    Args:
        salient: bool[H, W] the saliency map cut at its threshold.
        image_keywords: the image's keywords.
        keyword_maps: float[len(image_keywords), H, W] CAMs in [0, 1].
        cam_threshold: the activation a keyword needs to claim a salient pixel.
    """
    _check_keyword_maps(keyword_maps, image_keywords, salient.shape)
    labels = np.where(salient, IGNORE_INDEX, 0).astype(np.uint8)
    if len(image_keywords):
        classes = np.array([CLASS_INDEX[k] for k in image_keywords], dtype=np.uint8)
        peak = keyword_maps.max(axis=0)
        named = salient & (peak >= cam_threshold) & (peak > 0)
        labels[named] = classes[keyword_maps.argmax(axis=0)[named]]
    return labels
