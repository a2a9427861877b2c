"""The baseline cues: S4Net's salient instances merged into one class-agnostic saliency map.

``saliency`` names the whole foreground after the keyword of single-keyword images and
leaves multi-keyword images ignore; ``cam_saliency`` (Table 5's "Att + Sal") splits the
foreground of multi-keyword images among their keywords by class activation maps
(:mod:`pipeline.cues.cam`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pipeline.classes import CLASS_INDEX
from pipeline.cues.cam import CamNet
from pipeline.cues.keyword_assignment import LOW_SCORE, AssignmentConfig, candidate_status, instance_areas
from pipeline.cues.label_painting import ProxyConfig, saliency_labels
from pipeline.cues.result import CueResult, instance_records
from s4net.inference import Detections


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
            "instances": instance_records(detections, areas, salient, named, status, [1.0] * len(status)),
            "kept": len(salient) if labelled else 0,
            "rejected": 0 if labelled else len(salient),
        }
        if maps is not None:
            record["cam_keywords"] = {k: int(np.count_nonzero(labels == CLASS_INDEX[k])) for k in keywords}
        return CueResult(labels, probs, ids, record)
