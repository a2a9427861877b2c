"""The ``cam`` cue: class activation maps alone, cut by a background threshold (no S4Net, no saliency).

The field's plainest attention baseline: every pixel goes to the image keyword whose CAM
(each over its own maximum) is strongest there, if that CAM reaches ``proxy.cam_threshold``;
to the background otherwise. With ``--cam imagenet`` (:mod:`pipeline.cues.imagenet_cam`) it
needs no training at all.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from pipeline.classes import CLASS_INDEX, IGNORE_INDEX
from pipeline.cues.label_painting import ProxyConfig, border_band
from pipeline.cues.result import CueResult
from s4net.inference import Detections


class KeywordMaps(Protocol):
    """What the CAM cues read: :meth:`pipeline.cues.cam.CamNet.keyword_maps` and its ImageNet twin."""

    def keyword_maps(self, image: np.ndarray, keywords: Sequence[str]) -> np.ndarray: ...


def cam_labels(maps: np.ndarray, keywords: Sequence[str], threshold: float) -> np.ndarray:
    """uint8[H, W]: the strongest keyword where its map (float[K, H, W] in [0, 1]) reaches ``threshold``
    (and is positive), background elsewhere."""
    strongest = maps.argmax(axis=0)
    peak = maps.max(axis=0)
    ids = np.asarray([CLASS_INDEX[k] for k in keywords], dtype=np.uint8)
    return np.where((peak >= threshold) & (peak > 0), ids[strongest], 0).astype(np.uint8)


class CamCue:
    """Proxy labels from the keywords' class activation maps and a background threshold."""

    name = "cam"

    def __init__(self, proxy: ProxyConfig, cam: KeywordMaps) -> None:
        self.proxy = proxy
        self.cam = cam

    def __call__(self, detections: Detections, keywords: Sequence[str]) -> CueResult:
        """As :meth:`from_image` on the detections' image (the detections themselves are not read)."""
        return self.from_image(detections.image, keywords)

    def from_image(self, image: np.ndarray, keywords: Sequence[str]) -> CueResult:
        """One image's proxy label: uint8[H, W, 3] RGB and its keywords -> labels, CRF unary, record.

        The CRF's unary is the background threshold and the keywords' maps, as planes
        normalised to sum to one; ``proxy.border`` pixels along label boundaries are ignore.
        """
        maps = self.cam.keyword_maps(image, keywords)
        labels = cam_labels(maps, keywords, self.proxy.cam_threshold)
        labels[border_band(labels, self.proxy.border)] = IGNORE_INDEX
        background = np.full((1, *labels.shape), self.proxy.cam_threshold, dtype=np.float32)
        planes = np.concatenate([background, maps]).clip(1e-6, None)
        probs = (planes / planes.sum(axis=0, keepdims=True)).astype(np.float32)
        record = {"cam_keywords": {k: int(np.count_nonzero(labels == CLASS_INDEX[k])) for k in keywords}}
        return CueResult(labels, probs, [0, *(CLASS_INDEX[k] for k in keywords)], record)
