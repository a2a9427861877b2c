"""The ``s4net`` command line: salient-instance data tools (model commands follow)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from s4net import __version__
from s4net.clitools import add_verbosity, command_parser, run


def _convert_masks(args: argparse.Namespace) -> int:
    from s4net.data.convert import convert_instance_masks

    document = convert_instance_masks(args.images, args.instance_masks, args.out, progress=not args.quiet)
    print(f"wrote {args.out}: {len(document['images'])} images, {len(document['annotations'])} instances")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``s4net`` parser with one sub-parser per command."""
    parser, commands = command_parser(
        "s4net", "S4Net single-stage salient-instance segmentation.", __version__
    )

    convert = commands.add_parser(
        "convert-masks",
        help="instance-id PNGs (ILSO, VOC SegmentationObject) -> COCO salient-instance json",
        description=(
            "Convert instance-id PNGs (0 background, k = instance k, 255 void; or colour-coded RGB, "
            "one colour per instance) into COCO instance json with one category 'salient', RLE masks "
            "and an 'occluded' flag from box overlap. Each <stem>.png pairs with <stem>.<ext> in --images."
        ),
    )
    convert.add_argument("--images", type=Path, required=True, help="folder of images")
    convert.add_argument("--instance-masks", type=Path, required=True, help="folder of instance-id PNGs")
    convert.add_argument("--out", type=Path, required=True, help="COCO json to write")
    add_verbosity(convert)
    convert.set_defaults(handler=_convert_masks)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``s4net`` console script."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
