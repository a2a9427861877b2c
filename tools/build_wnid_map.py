"""Build ``pipeline/datasets/wnid_to_voc.tsv`` from the ILSVRC-1000 class list.

Usage: python tools/build_wnid_map.py ../shared/realdata/imagenet_classes.tsv

The choices are ours: every ILSVRC synset that is a kind of one of the 20 PASCAL VOC
classes (all 118 dog breeds -> dog, all birds -> bird, ...). Synsets that only look
related (wolves, wild cats, trucks, zebra, water buffalo) are left out, as is anything
VOC labels as background.

``imagenet_index`` is the synset's class index in ILSVRC-2012 classifiers: its position among the
1000 wnids sorted (the order of the class list, which is sorted, and of torchvision's and timm's
ImageNet heads).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Index ranges (0-based ILSVRC class order) that are whole families.
RANGES = {
    "bird": [(7, 24), (80, 100), (127, 146)],
    "dog": [(151, 268)],
}
# Single synsets, by wnid.
SINGLES = {
    "aeroplane": ["n02690373", "n04552348"],  # airliner, warplane
    "bicycle": ["n02835271", "n03792782"],  # bicycle-built-for-two, mountain bike
    "boat": [
        "n02687172", "n02951358", "n02981792", "n03095699", "n03344393", "n03447447", "n03662601",
        "n03673027", "n03947888", "n04147183", "n04273569", "n04347754", "n04483307", "n04612504",
    ],
    "bottle": ["n02823428", "n03937543", "n03983396", "n04557648", "n04591713"],
    "bus": ["n03769881", "n04146614", "n04487081"],
    "car": [
        "n02701002", "n02814533", "n02930766", "n03100240", "n03594945", "n03670208", "n03770679",
        "n03777568", "n03977966", "n04037443", "n04285008",
    ],
    "cat": ["n02123045", "n02123159", "n02123394", "n02123597", "n02124075"],
    "chair": ["n02791124", "n03376595", "n04099969", "n04429376"],
    "cow": ["n02403003"],  # ox
    "diningtable": ["n03201208"],
    "horse": ["n02389026"],  # sorrel
    "motorbike": ["n03785016", "n03791053"],  # moped, motor scooter
    "person": ["n09835506", "n10148035", "n10565667"],  # ballplayer, groom, scuba diver
    "pottedplant": ["n03991062"],  # pot (flowerpot)
    "sheep": ["n02412080", "n02415577"],  # ram, bighorn
    "sofa": ["n04344873"],  # studio couch
    "train": ["n02917067", "n03272562", "n03393912", "n03895866", "n04310018", "n04335435"],
    "tvmonitor": ["n03782006", "n04152593", "n04404412"],  # monitor, screen, television
}


def main(classes_tsv: str, out: str = "pipeline/datasets/wnid_to_voc.tsv") -> None:
    rows = [line.split("\t") for line in Path(classes_tsv).read_text().splitlines() if line.strip()]
    labels = {wnid: label for wnid, label in rows}
    mapping: dict[str, str] = {}
    for voc, ranges in RANGES.items():
        for start, stop in ranges:
            for wnid, _ in rows[start : stop + 1]:
                mapping[wnid] = voc
    for voc, wnids in SINGLES.items():
        for wnid in wnids:
            if wnid not in labels:
                raise SystemExit(f"{wnid} is not an ILSVRC-1000 synset")
            mapping[wnid] = voc
    order = {wnid: i for i, (wnid, _) in enumerate(rows)}
    index = {wnid: i for i, wnid in enumerate(sorted(labels))}  # a classifier's class index: sorted wnid order
    lines = ["wnid\timagenet_label\tvoc_class\timagenet_index"]
    lines += [f"{w}\t{labels[w]}\t{mapping[w]}\t{index[w]}" for w in sorted(mapping, key=order.__getitem__)]
    Path(out).write_text("\n".join(lines) + "\n")
    print(f"wrote {out}: {len(mapping)} synsets")


if __name__ == "__main__":
    main(*sys.argv[1:])
