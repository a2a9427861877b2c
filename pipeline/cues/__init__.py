"""Cues: from one image's S4Net detections and keywords to a proxy label.

Every cue is called as ``cue(detections, keywords) -> CueResult`` (:mod:`pipeline.cues.result`):

* ``instances`` (the method, :mod:`~pipeline.cues.instances`): salient instances, each
  given a keyword by :mod:`~pipeline.cues.keyword_assignment` (with the
  :mod:`~pipeline.cues.instance_classifier` on multi-keyword images), painted as
  separate instances by :mod:`~pipeline.cues.label_painting`;
* ``saliency`` (the baseline, :mod:`~pipeline.cues.saliency`): the same instances merged
  into one class-agnostic saliency map, as saliency-map methods give;
* ``cam_saliency`` (the paper's "Att + Sal"): the saliency cue whose foreground of
  multi-keyword images is split by the class activation maps of :mod:`~pipeline.cues.cam`.

:mod:`~pipeline.cues.crf` refines any of them. This module itself imports nothing
heavy, so the workflow can read :data:`CUES` when it plans.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.cues.cam import CamNet
    from pipeline.cues.instance_classifier import InstanceClassifier
    from pipeline.cues.keyword_assignment import AssignmentConfig
    from pipeline.cues.label_painting import ProxyConfig
    from pipeline.cues.result import Cue

CUES = ("instances", "saliency", "cam_saliency")
# the model each cue reads besides S4Net, by its `wsss proxy-labels` option: the instance classifier
# (`--classifier`, multi-keyword images), the CAM classifier (`--cam`), or none
CUE_MODELS = {"instances": "classifier", "saliency": None, "cam_saliency": "cam"}


def make_cue(name: str, assignment: AssignmentConfig, proxy: ProxyConfig, classifier: InstanceClassifier | None = None,
             cam: CamNet | None = None) -> Cue:
    """The cue called ``name``: ``instances`` (needs ``classifier`` for multi-keyword images),
    ``saliency``, or ``cam_saliency`` (needs ``cam``)."""
    from pipeline.cues.instances import InstanceCue
    from pipeline.cues.saliency import SaliencyCue

    if name == "instances":
        return InstanceCue(assignment, proxy, classifier)
    if name == "saliency":
        return SaliencyCue(assignment, proxy)
    if name == "cam_saliency":
        if cam is None:
            raise ValueError("the cam_saliency cue needs a CAM classifier (wsss train-cam)")
        return SaliencyCue(assignment, proxy, cam)
    raise ValueError(f"unknown cue {name!r}; expected one of {list(CUES)}")
