"""The VOC pseudo-label table: each labeller's scores on a VOC split beside published anchors.

Rows come from ``wsss score`` JSON files (one per labeller: a cue, or a cue fed by an
outside saliency source such as ``saliency+oracle``). Two ignore policies are shown:
ours (an unlabelled pixel is a miss) and the field's (IRN's ``eval_sem_seg`` scores it as
background), which is the one the anchors use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pipeline.reporting.report import _pct as pct
from pipeline.reporting.report import html_table


@dataclass(frozen=True)
class Anchor:
    """A published pseudo-label mIoU (%) on PASCAL VOC 2012 train, quoted from its source."""

    method: str
    miou: float
    setting: str
    source: str


# Each number was read at the source named, at the commit named. IRN's 66.5 (often quoted) is in its paper,
# not its repository's README, and was not checked here, so it is left out.
ANCHORS: tuple[Anchor, ...] = (
    Anchor("PSA (AffinityNet random walk)", 61.0, "ResNet-38, VOC 2012 train",
           "github.com/jiwoon-ahn/psa README @ ff17bf5, 'Random Walk with AffinityNet' table"),
    Anchor("EPS (CAM + PFAN saliency)", 69.22, "ResNet-38, VOC 2012 train",
           "github.com/halbielee/EPS README @ 0538384, classification-network table"),
    Anchor("CLIP-ES (CAMs)", 70.8, "CLIP ViT-B/16, VOC 2012 train",
           "github.com/linyq2117/CLIP-ES README @ 9094660, pseudo-mask table"),
    Anchor("CLIP-ES (CAMs + CRF)", 75.0, "CLIP ViT-B/16, VOC 2012 train",
           "github.com/linyq2117/CLIP-ES README @ 9094660, pseudo-mask table"),
)

LABELLER_TITLES = {"instances": "S4Net instances (ours)", "saliency": "S4Net saliency",
                   "cam_saliency": "CAM + S4Net saliency", "cam": "CAM alone (background threshold)"}


def labeller_title(name: str) -> str:
    """``cue`` or ``cue+source`` as a reader's label, e.g. ``saliency+oracle`` -> 'saliency from oracle maps'."""
    cue, _, source = name.partition("+")
    if not source:
        return LABELLER_TITLES.get(cue, cue)
    return f"{'CAM + ' if cue == 'cam_saliency' else ''}saliency from {source} maps"


def pseudo_label_rows(scores: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per labeller: images, coverage, mIoU under both ignore policies, labelled-part mIoU,
    mean precision and recall, and the per-class numbers."""
    rows = []
    for name, s in scores.items():
        rows.append({
            "labeller": name, "title": labeller_title(name), "images": s.get("images"),
            "coverage": s.get("coverage"), "mIoU": s.get("mIoU"),
            "mIoU_ignore_as_background": s.get("mIoU_ignore_as_background"), "mIoU_labelled": s.get("mIoU_labelled"),
            "mean_precision": s.get("mean_precision"), "mean_recall": s.get("mean_recall"),
            "per_class_iou": s.get("per_class_iou"), "per_class_precision": s.get("per_class_precision"),
            "per_class_recall": s.get("per_class_recall"),
        })
    return rows


def pseudo_label_table(scores: dict[str, dict[str, Any]], split: str, note: str = "") -> tuple[str, dict[str, Any]]:
    """(HTML page, JSON summary) of the labellers' scores on VOC ``split`` with the published anchors."""
    rows = pseudo_label_rows(scores)
    cells = [[r["title"], r["images"], pct(r["coverage"]), pct(r["mIoU"]), pct(r["mIoU_ignore_as_background"]),
              pct(r["mIoU_labelled"]), pct(r["mean_precision"]), pct(r["mean_recall"])] for r in rows]
    cells += [[f"published: {a.method}", "1464", "", "", f"{a.miou:.1f}", "", "", ""] for a in ANCHORS]
    text = (f"Proxy labels of VOC {split} made from its image-level tags alone, scored against SegmentationClass "
            "(one confusion matrix over the split; 255 in the truth skipped). 'miss': an unlabelled (255) pixel "
            "counts as wrong; '255 as bg': it counts as background, as the field scores pseudo labels (IRN's "
            "eval_sem_seg) and as the published rows do; 'labelled': only the pixels the labels name, on the "
            "share given by coverage. Precision and recall are class means (unlabelled pixels count against "
            "recall). Published rows, on the 1,464 real VOC train images with ImageNet-pretrained networks: "
            + "; ".join(f"{a.method}: {a.setting}, {a.source}" for a in ANCHORS) + "." + (f" {note}" if note else ""))
    page = html_table(f"Pseudo labels of VOC {split}: mIoU (%) by labeller",
                      ["labeller", "images", "coverage", "mIoU (miss)", "mIoU (255 as bg)", "mIoU (labelled)",
                       "precision", "recall"], cells, text)
    summary = {"split": split, "rows": rows, "anchors": [asdict(a) for a in ANCHORS]}
    return page, summary
