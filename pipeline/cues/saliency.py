"""The baseline cues: S4Net's salient instances merged into one class-agnostic saliency map.

``saliency`` names the whole foreground after the keyword of single-keyword images and
leaves multi-keyword images ignore; ``cam_saliency`` (Table 5's "Att + Sal") splits the
foreground of multi-keyword images among their keywords by class activation maps
(:mod:`pipeline.cues.cam`).

Both take their saliency from S4Net's instances (called with detections) or from an
outside saliency map (:meth:`SaliencyCue.from_map`, :mod:`pipeline.cues.saliency_maps`),
and fuse it with the CAMs by our rule (``split``) or WSSS-BED's (``wsss_bed``,
:func:`pipeline.cues.label_painting.wsss_bed_labels`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pipeline.classes import CLASS_INDEX
from pipeline.cues.cam_labels import KeywordMaps
from pipeline.cues.keyword_assignment import LOW_SCORE, AssignmentConfig, candidate_status, instance_areas
from pipeline.cues.label_painting import ProxyConfig, map_saliency_labels, saliency_labels, wsss_bed_labels
from pipeline.cues.result import CueResult, instance_records
from pipeline.cues.saliency_maps import SaliencyConfig
from s4net.inference import Detections


def salient_instances(detections: Detections, assignment: AssignmentConfig) -> tuple[np.ndarray, list[str], list[int]]:
    """Each instance's area (fraction of the image) and status, and the indices of the salient ones: every
    instance scoring at least ``assignment.score_threshold`` (small ones too: the saliency cues keep them)."""
    areas = instance_areas(detections.masks, assignment.mask_threshold)
    status = candidate_status(detections.scores, areas, assignment)
    return areas, status, [i for i, s in enumerate(status) if s != LOW_SCORE]


def _union(masks: np.ndarray, salient: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """float32[H, W]: the strongest of ``masks[salient]`` (float[K, H, W]) at each pixel; 0 without any."""
    return masks[list(salient)].max(axis=0) if len(salient) else np.zeros(shape, dtype=np.float32)


def saliency_map(detections: Detections, assignment: AssignmentConfig) -> np.ndarray:
    """float32[H, W] in [0, 1]: the saliency cue's class-agnostic map, the union (pixel-wise maximum) of the
    salient instances' mask probabilities; its foreground is where it reaches ``ProxyConfig.foreground``."""
    _, _, salient = salient_instances(detections, assignment)
    return _union(detections.masks, salient, detections.image.shape[:2])


class SaliencyCue:
    """The salient instances' union (or an outside saliency map) as one class-agnostic saliency map.

    With ``cam`` (the ``cam_saliency`` cue), the foreground of a multi-keyword image is
    split among its keywords by their class activation maps; single-keyword images are
    labelled as by the saliency cue alone. With ``saliency.fusion == "wsss_bed"`` (needs
    ``cam``) the CAMs name every salient pixel instead (WSSS-BED's rule).
    """

    def __init__(self, assignment: AssignmentConfig, proxy: ProxyConfig, cam: KeywordMaps | None = None,
                 saliency: SaliencyConfig | None = None) -> None:
        saliency = saliency or SaliencyConfig()
        if saliency.fusion == "wsss_bed" and cam is None:
            raise ValueError("wsss_bed fusion needs class activation maps: use the cam_saliency cue")
        self.assignment = assignment
        self.proxy = proxy
        self.cam = cam
        self.saliency = saliency

    @property
    def name(self) -> str:
        return "saliency" if self.cam is None else "cam_saliency"

    def __call__(self, detections: Detections, keywords: Sequence[str]) -> CueResult:
        masks = detections.masks
        areas, status, salient = salient_instances(detections, self.assignment)
        shape = detections.image.shape[:2]
        if self.saliency.fusion == "wsss_bed":
            result = self._fuse(detections.image, _union(masks, salient, shape), keywords)
            named = [None] * len(status)
            record = {"instances": instance_records(detections, areas, salient, named, status, [1.0] * len(status)),
                      "kept": len(salient), "rejected": 0, **result.record}
            return CueResult(result.labels, result.probabilities, result.label_ids, record)
        split = self.cam is not None and len(keywords) > 1 and bool(salient)
        maps = self.cam.keyword_maps(detections.image, keywords) if split else None
        labels = saliency_labels(masks[salient], keywords, self.proxy, shape, maps)
        probs, ids = None, [0]
        if salient and (len(keywords) == 1 or maps is not None):
            probs, ids = _probabilities(_union(masks, salient, shape), keywords, maps)
        named = [keywords[0] if len(keywords) == 1 else None] * len(status)
        labelled = len(keywords) == 1 or maps is not None
        record = {
            "instances": instance_records(detections, areas, salient, named, status, [1.0] * len(status)),
            "kept": len(salient) if labelled else 0,
            "rejected": 0 if labelled else len(salient),
        }
        if maps is not None:
            record["cam_keywords"] = {k: int(np.count_nonzero(labels == CLASS_INDEX[k])) for k in keywords}
        return CueResult(labels, probs, ids, record)

    def from_map(self, image: np.ndarray, saliency: np.ndarray, keywords: Sequence[str]) -> CueResult:
        """One image's proxy label from an outside saliency map (no S4Net).

        Args:
            image: uint8[H, W, 3] RGB (the CAM's input and the CRF's).
            saliency: float32[H, W] in [0, 1] (the map's value / 255), salient from
                ``self.saliency.threshold``.
            keywords: the image's keywords.
        """
        if saliency.shape != image.shape[:2]:
            raise ValueError(f"saliency map of shape {saliency.shape} for an image of {image.shape[:2]}")
        return self._fuse(image, saliency, keywords)

    def _fuse(self, image: np.ndarray, saliency: np.ndarray, keywords: Sequence[str]) -> CueResult:
        """Labels, CRF probabilities and record from a saliency map cut at ``self.saliency.threshold``."""
        salient = self.saliency.salient(saliency)
        any_salient = bool(salient.any())
        wsss_bed = self.saliency.fusion == "wsss_bed"
        needs_maps = self.cam is not None and any_salient and (wsss_bed or len(keywords) > 1)
        maps = self.cam.keyword_maps(image, keywords) if needs_maps else None
        if wsss_bed:
            cams = maps if maps is not None else np.zeros((len(keywords), *salient.shape), dtype=np.float32)
            labels = wsss_bed_labels(salient, keywords, cams, self.proxy.cam_threshold)
        else:
            labels = map_saliency_labels(salient, keywords, self.proxy, maps)
        probs, ids = None, [0]
        if any_salient and (len(keywords) == 1 or maps is not None):
            probs, ids = _probabilities(saliency.astype(np.float32), keywords, maps)
        record: dict = {"salient_fraction": round(float(salient.mean()), 4)}
        if maps is not None:
            record["cam_keywords"] = {k: int(np.count_nonzero(labels == CLASS_INDEX[k])) for k in keywords}
        return CueResult(labels, probs, ids, record)


def _probabilities(saliency: np.ndarray, keywords: Sequence[str],
                   maps: np.ndarray | None) -> tuple[np.ndarray, list[int]]:
    """float32[1 + K, H, W] CRF unary and its label ids: background ``1 - saliency``; the saliency itself for a
    single keyword (``maps`` None), or shared among the keywords in proportion to their ``maps``."""
    if maps is None:
        planes = [saliency]
    else:
        share = maps / np.clip(maps.sum(axis=0, keepdims=True), 1e-6, None)
        planes = list(saliency[None] * share)
    probs = np.stack([1.0 - saliency, *planes]).astype(np.float32)
    return probs, [0, *(CLASS_INDEX[k] for k in keywords)]
