"""Cues: from one image's S4Net detections and keywords to a proxy label.

Every cue is called as ``cue(detections, keywords) -> CueResult`` (:mod:`pipeline.cues.result`):

* ``instances`` (the method, :mod:`~pipeline.cues.instances`): salient instances, each
  given a keyword by :mod:`~pipeline.cues.keyword_assignment` (with the
  :mod:`~pipeline.cues.instance_classifier` on multi-keyword images), painted as
  separate instances by :mod:`~pipeline.cues.label_painting`;
* ``saliency`` (the baseline, :mod:`~pipeline.cues.saliency`): the same instances merged
  into one class-agnostic saliency map, as saliency-map methods give;
* ``cam_saliency`` (the paper's "Att + Sal"): the saliency cue whose foreground of
  multi-keyword images is split by the class activation maps of :mod:`~pipeline.cues.cam`;
* ``cam`` (an attention baseline, :mod:`~pipeline.cues.cam_labels`): the class activation maps
  alone, cut by a background threshold; reads the image only (no S4Net, no saliency).

The CAMs come from a classifier trained on the keywords (:mod:`~pipeline.cues.cam`) or, with
no training, from the ImageNet classifier itself (:mod:`~pipeline.cues.imagenet_cam`).

:mod:`~pipeline.cues.crf` refines any of them. This module itself imports nothing
heavy, so the workflow can read :data:`CUES` when it plans.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.cues.cam_labels import KeywordMaps
    from pipeline.cues.instance_classifier import InstanceClassifier
    from pipeline.cues.keyword_assignment import AssignmentConfig
    from pipeline.cues.label_painting import ProxyConfig
    from pipeline.cues.result import Cue
    from pipeline.cues.saliency_maps import SaliencyConfig

CUES = ("instances", "saliency", "cam_saliency", "cam")
# the model each cue reads besides S4Net, by its `wsss proxy-labels` option: the instance classifier
# (`--classifier`, multi-keyword images), the CAM classifier (`--cam`), or none
CUE_MODELS = {"instances": "classifier", "saliency": None, "cam_saliency": "cam", "cam": "cam"}
# cues that read the image alone: neither S4Net nor a saliency map
IMAGE_CUES = ("cam",)


def make_cue(name: str, assignment: AssignmentConfig, proxy: ProxyConfig, classifier: InstanceClassifier | None = None,
             cam: KeywordMaps | None = None, saliency: SaliencyConfig | None = None) -> Cue:
    """The cue called ``name``: ``instances`` (needs ``classifier`` for multi-keyword images),
    ``saliency``, ``cam_saliency`` or ``cam`` (both need ``cam``, a trained CamNet or the ImageNet CAM);
    ``saliency`` (None: S4Net's instances, our fusion) says where the saliency cues take their saliency
    from and how they fuse it."""
    from pipeline.cues.cam_labels import CamCue
    from pipeline.cues.instances import InstanceCue
    from pipeline.cues.saliency import SaliencyCue
    from pipeline.cues.saliency_maps import SaliencyConfig

    saliency = saliency or SaliencyConfig()
    if name == "instances":
        check_saliency_source(name, saliency)
        return InstanceCue(assignment, proxy, classifier)
    if name == "saliency":
        check_saliency_source(name, saliency)
        return SaliencyCue(assignment, proxy, saliency=saliency)
    if name == "cam_saliency":
        if cam is None:
            raise ValueError("the cam_saliency cue needs a CAM classifier (wsss train-cam)")
        return SaliencyCue(assignment, proxy, cam, saliency)
    if name == "cam":
        check_saliency_source(name, saliency)
        if cam is None:
            raise ValueError("the cam cue needs class activation maps (--cam imagenet, or wsss train-cam)")
        return CamCue(proxy, cam)
    raise ValueError(f"unknown cue {name!r}; expected one of {list(CUES)}")


def check_saliency_source(cue: str, saliency: SaliencyConfig) -> None:
    """Refuse a saliency source or fusion the cue cannot use (ValueError naming the option)."""
    if cue == "instances" and saliency.outside:
        raise ValueError("--saliency-maps needs --cue saliency or cam_saliency; the instances cue reads S4Net's "
                         "instances themselves")
    if cue in IMAGE_CUES and saliency.outside:
        raise ValueError(f"--saliency-maps needs --cue saliency or cam_saliency; the {cue} cue reads no saliency")
    if saliency.fusion == "wsss_bed" and cue != "cam_saliency":
        raise ValueError(f"--fusion wsss_bed needs --cue cam_saliency (its class activation maps), not {cue}")
