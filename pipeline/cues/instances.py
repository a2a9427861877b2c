"""The method's cue: salient instances, each named by a keyword of its image, painted as instances.

Single-keyword images give every salient instance their keyword; on multi-keyword images
:mod:`pipeline.cues.keyword_assignment` matches instances to keywords with the
instance classifier's probabilities (its features come from :func:`s4net.inference.run_detector`
with ``features=True``).
"""

from __future__ import annotations

from typing import Sequence

from pipeline.classes import CLASS_INDEX
from pipeline.cues.instance_classifier import InstanceClassifier
from pipeline.cues.keyword_assignment import LOW_SCORE, AssignmentConfig, assign_keywords, instance_areas
from pipeline.cues.label_painting import ProxyConfig, class_probabilities, instance_labels
from pipeline.cues.result import CueResult, instance_records
from s4net.inference import Detections


class InstanceCue:
    """Salient instances with assigned keywords (multi-keyword images need ``classifier``)."""

    name = "instances"

    def __init__(self, assignment: AssignmentConfig, proxy: ProxyConfig,
                 classifier: InstanceClassifier | None = None) -> None:
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
            "instances": instance_records(detections, areas, salient, assignment.keywords, assignment.status,
                                          assignment.confidence),
            "kept": len(assignment.labelled()),
            "rejected": len(rejected),
        }
        return CueResult(labels, probs, [0, *present], record)
