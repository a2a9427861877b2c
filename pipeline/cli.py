"""The ``wsss`` command line: data, proxy labels, segmenter training and scoring."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

from pipeline import __version__
from s4net.clitools import add_verbosity, command_parser, run


def _demo_data(args: argparse.Namespace) -> int:
    from pipeline.synthetic.preview import contact_sheet
    from pipeline.synthetic.world import generate_world

    world = generate_world(
        args.out, seed=args.seed, scale=args.scale, workers=args.workers, overwrite=args.overwrite,
        progress=not args.quiet, preview=contact_sheet,
    )
    stats = world["stats"]
    print(
        f"synthetic world (seed {args.seed}, scale {args.scale}) in {args.out}: "
        f"salient {stats['salient']['train']['images']}/{stats['salient']['val']['images']}/"
        f"{stats['salient']['test']['images']} images, imagenet {stats['imagenet']['images']} images "
        f"({stats['imagenet']['multi_keyword_fraction']:.0%} multi-keyword), "
        f"voc {stats['voc']['train']} train / {stats['voc']['val']} val; preview {Path(args.out) / world['preview']}"
    )
    return 0


def _keywords(args: argparse.Namespace) -> int:
    from pipeline.imagenet import keywords_from_folders, load_wnid_map, write_keyword_table

    entries, skipped = keywords_from_folders(args.images, load_wnid_map(args.wnid_map), split=args.split)
    write_keyword_table(args.out, entries)
    print(f"wrote {args.out}: {len(entries)} images; {len(skipped)} wnid folders have no VOC class and were skipped")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``wsss`` parser with one sub-parser per command."""
    parser, commands = command_parser(
        "wsss", "Weakly-supervised semantic segmentation from S4Net salient-instance cues.", __version__
    )

    demo = commands.add_parser(
        "demo-data",
        help="generate the synthetic salient world (COCO salient instances, ImageNet subset, VOC 2012)",
        description=(
            "Write a deterministic synthetic world in the real formats: OUT/salient (COCO json), "
            "OUT/imagenet (train/<wnid>/*.JPEG + keywords.csv), OUT/voc/VOC2012 (devkit layout), "
            "and OUT/preview/contact_sheet.png. Rerunning with the same seed and scale is a no-op."
        ),
    )
    demo.add_argument("--out", type=Path, required=True, help="output folder")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--scale", choices=("tiny", "small", "medium"), default="small",
                      help="tiny: tests, seconds; small: the demo; medium: reproduction runs")
    demo.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                      help="processes (output is identical for any value)")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing world made otherwise")
    add_verbosity(demo)
    demo.set_defaults(handler=_demo_data)

    keywords = commands.add_parser(
        "keywords",
        help="derive a keyword table from ImageNet wnid folders",
        description="Write IMAGES-relative paths and VOC keywords for IMAGES/<split>/<wnid>/* using the wnid -> VOC map.",
    )
    keywords.add_argument("--images", type=Path, required=True, help="ImageNet root (holds train/<wnid>/)")
    keywords.add_argument("--out", type=Path, required=True, help="keyword CSV to write")
    keywords.add_argument("--split", default="train", help="sub-folder holding the wnid folders (default train)")
    keywords.add_argument("--wnid-map", type=Path, default=None, help="TSV wnid/imagenet_label/voc_class (default: shipped)")
    add_verbosity(keywords)
    keywords.set_defaults(handler=_keywords)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wsss`` console script."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
