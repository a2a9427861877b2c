"""Cues: from one image's S4Net detections and keywords to a proxy label.

Two kinds behind one interface (``cue(detections, keywords) -> CueResult``):

* :class:`InstanceCue` (the method): salient instances, each given a keyword
  (:mod:`pipeline.keywords`), painted as separate instances.
* :class:`SaliencyCue` (the baseline): the same instances merged into one
  class-agnostic saliency map, as saliency-map methods give.
* ``cam_saliency`` (the paper's "Att + Sal" baseline): a :class:`SaliencyCue` given a
  CAM classifier, so that the foreground of multi-keyword images is split by the class
  activation maps of a classifier trained on the image keywords alone (:mod:`pipeline.cam`).

The detections come from :func:`s4net.inference.run_detector` (with ``features=True``
when the instance cue has multi-keyword images to label).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from pipeline.cam import CamNet
from pipeline.classes import CLASS_INDEX
from pipeline.instance_classifier import InstanceClassifier
from pipeline.keywords import LOW_SCORE, AssignmentConfig, assign_keywords, candidate_status, instance_areas
from pipeline.proxy import ProxyConfig, class_probabilities, instance_labels, saliency_labels
from s4net.inference import Detections

CUES = ("instances", "saliency", "cam_saliency")


@dataclass(frozen=True)
class CueResult:
    """A proxy label and what the CRF and the manifest need.

    Attributes:
        labels: uint8[H, W] (0 background, 1..20, 255 ignore).
        probabilities: float32[n, H, W] of ``label_ids`` (CRF unary), or None when
            there is nothing for a CRF to decide.
        label_ids: class index of each probability plane (0 first).
        record: manifest fields (instances with score, area, keyword, status).
    """

    labels: np.ndarray
    probabilities: np.ndarray | None
    label_ids: list[int]
    record: dict[str, Any]


class Cue(Protocol):
    @property
    def name(self) -> str: ...

    def __call__(self, detections: Detections, keywords: Sequence[str]) -> CueResult: ...


def _instance_records(detections: Detections, areas: np.ndarray, indices: Sequence[int], keywords: Sequence[str | None],
                      status: Sequence[str], confidence: Sequence[float]) -> list[dict[str, Any]]:
    return [
        {
            "score": round(float(detections.scores[i]), 4),
            "area": round(float(areas[i]), 4),
            "keyword": keywords[i],
            "status": status[i],
            "confidence": round(float(confidence[i]), 4),
        }
        for i in indices
    ]


class InstanceCue:
    """Salient instances with assigned keywords (multi-keyword images need ``classifier``)."""

    name = "instances"

    def __init__(self, assignment: AssignmentConfig, proxy: ProxyConfig, classifier: InstanceClassifier | None = None) -> None:
        self.assignment = assignment
        self.proxy = proxy
        self.classifier = classifier

    def __call__(self, detections: Detections, keywords: Sequence[str]) -> CueResult:
        masks = detections.masks
        areas = instance_areas(masks, self.assignment.mask_threshold)
        probabilities = None
        if len(keywords) > 1:
            if self.classifier is None or detections.features is None:
                raise ValueError("images with several keywords need an instance classifier and instance features")
            probabilities = self.classifier.keyword_probabilities(detections.features, keywords)
        assignment = assign_keywords(keywords, detections.scores, areas, probabilities, self.assignment)
        salient = [i for i, s in enumerate(assignment.status) if s != LOW_SCORE]
        local = {i: n for n, i in enumerate(salient)}
        instance_keywords = [assignment.keywords[i] for i in salient]
        rejected = [local[i] for i in assignment.rejected()]
        shape = detections.image.shape[:2]
        labels = instance_labels(masks[salient], instance_keywords, rejected, self.proxy, shape)
        present = sorted({CLASS_INDEX[k] for k in instance_keywords if k is not None})
        classes = [CLASS_INDEX[k] if k is not None else -1 for k in instance_keywords]
        probs = class_probabilities(masks[salient], classes, present) if present else None
        record = {
            "instances": _instance_records(detections, areas, salient, assignment.keywords, assignment.status, assignment.confidence),
            "kept": len(assignment.labelled()),
            "rejected": len(rejected),
        }
        return CueResult(labels, probs, [0, *present], record)


class SaliencyCue:
    """The salient instances' union as one class-agnostic saliency map (the baseline).

    With ``cam`` (the ``cam_saliency`` cue), the foreground of a multi-keyword image is
    split among its keywords by their class activation maps; single-keyword images are
    labelled as by the saliency cue alone.
    """

    def __init__(self, assignment: AssignmentConfig, proxy: ProxyConfig, cam: CamNet | None = None) -> None:
        self.assignment = assignment
        self.proxy = proxy
        self.cam = cam

    @property
    def name(self) -> str:
        return "saliency" if self.cam is None else "cam_saliency"

    def __call__(self, detections: Detections, keywords: Sequence[str]) -> CueResult:
        masks = detections.masks
        areas = instance_areas(masks, self.assignment.mask_threshold)
        status = candidate_status(detections.scores, areas, self.assignment)
        salient = [i for i, s in enumerate(status) if s != LOW_SCORE]
        shape = detections.image.shape[:2]
        split = self.cam is not None and len(keywords) > 1 and bool(salient)
        maps = self.cam.keyword_maps(detections.image, keywords) if split else None
        labels = saliency_labels(masks[salient], keywords, self.proxy, shape, maps)
        probs, ids = None, [0]
        if salient and (len(keywords) == 1 or maps is not None):
            saliency = masks[salient].max(axis=0)
            if maps is None:
                planes = [saliency]
            else:
                share = maps / np.clip(maps.sum(axis=0, keepdims=True), 1e-6, None)
                planes = list(saliency[None] * share)
            probs = np.stack([1.0 - saliency, *planes]).astype(np.float32)
            ids = [0, *(CLASS_INDEX[k] for k in keywords)]
        named = [keywords[0] if len(keywords) == 1 else None] * len(status)
        labelled = len(keywords) == 1 or maps is not None
        record = {
            "instances": _instance_records(detections, areas, salient, named, status, [1.0] * len(status)),
            "kept": len(salient) if labelled else 0,
            "rejected": 0 if labelled else len(salient),
        }
        if maps is not None:
            record["cam_keywords"] = {k: int(np.count_nonzero(labels == CLASS_INDEX[k])) for k in keywords}
        return CueResult(labels, probs, ids, record)


def make_cue(name: str, assignment: AssignmentConfig, proxy: ProxyConfig, classifier: InstanceClassifier | None = None,
             cam: CamNet | None = None) -> Cue:
    """The cue called ``name``: ``instances`` (needs ``classifier`` for multi-keyword images),
    ``saliency``, or ``cam_saliency`` (needs ``cam``)."""
    if name == "instances":
        return InstanceCue(assignment, proxy, classifier)
    if name == "saliency":
        return SaliencyCue(assignment, proxy)
    if name == "cam_saliency":
        if cam is None:
            raise ValueError("the cam_saliency cue needs a CAM classifier (wsss train-cam)")
        return SaliencyCue(assignment, proxy, cam)
    raise ValueError(f"unknown cue {name!r}; expected one of {list(CUES)}")
