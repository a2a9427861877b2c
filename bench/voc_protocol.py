"""The VOC pseudo-label protocol on a VOC-layout folder outside the workflow (JSON out).

The workflow's ``voc_pseudo_labels`` target runs the protocol on the data of its config;
this runs the same commands on any VOC-layout folder, e.g. the 16 real VOC images of
``../shared/realdata/voc2012_seg16`` (no ``ImageSets``: ``--ids`` names them), with the
models a demo run trained: tags from the masks (``wsss voc-tags``), proxy labels of
every cue on S4Net and of the saliency cues on oracle maps made from the masks
(``wsss saliency-from-masks``), each scored against ``SegmentationClass`` (``wsss
score``), and the table beside the published anchors (``wsss pseudo-label-table``).

    python -m bench.voc_protocol --voc-root ../shared/realdata/voc2012_seg16 \\
        --ids ../shared/realdata/voc2012_seg16/ids.txt --demo demo_out \\
        --out bench/results/voc_protocol_seg16.json
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path
from typing import Any

from bench.report import emit


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Run the protocol's commands in ``work``; the table's json with what produced it."""
    from pipeline.cli import main as wsss
    from pipeline.proxy_labels.manifest import file_sha256
    from pipeline.reporting.provenance import code_version
    from s4net.io.atomic import read_json

    demo = args.demo
    models = {"checkpoint": demo / "s4net" / "model_final.pt", "classifier": demo / "proxy" / "instance_classifier.pt",
              "cam": demo / "proxy" / "cam_classifier" / "cam.pt"}
    missing = [str(path) for path in models.values() if not path.is_file()]
    if missing:
        raise SystemExit(f"error: {missing[0]} not found: run `make demo` first (or pass --demo)")
    ids = ["--ids", str(args.ids)] if args.ids else ["--split", args.split]
    tags, maps = work / "tags.csv", work / "oracle_saliency"
    _check(wsss(["voc-tags", "--voc-root", str(args.voc_root), *ids, "--out", str(tags), "-q"]))
    _check(wsss(["saliency-from-masks", "--masks", str(args.voc_root / "SegmentationClass"), "--out", str(maps),
                 "-q"]))
    common = ["--images", str(args.voc_root / "JPEGImages"), "--keywords", str(tags), "--device", args.device, "-q"]
    labellers = {
        "instances": ["--checkpoint", str(models["checkpoint"]), "--cue", "instances",
                      "--classifier", str(models["classifier"])],
        "saliency": ["--checkpoint", str(models["checkpoint"]), "--cue", "saliency"],
        "cam_saliency": ["--checkpoint", str(models["checkpoint"]), "--cue", "cam_saliency", "--cam",
                         str(models["cam"])],
        "saliency+oracle": ["--saliency-maps", str(maps), "--cue", "saliency"],
        "cam_saliency+oracle": ["--saliency-maps", str(maps), "--cue", "cam_saliency", "--cam", str(models["cam"])],
    }
    gt = args.voc_root / "SegmentationClass"
    id_list = args.ids or args.voc_root / "ImageSets" / "Segmentation" / f"{args.split}.txt"
    scores = []
    for name, flags in labellers.items():
        out = work / name
        _check(wsss(["proxy-labels", *flags, *common, "--out", str(out)]))
        _check(wsss(["score", "--pred", str(out / "labels"), "--gt", str(gt), "--ids", str(id_list),
                     "--out", str(out / "scores.json"), "-q"]))
        scores.append(f"{name}={out / 'scores.json'}")
    table = work / "table"
    _check(wsss(["pseudo-label-table", "--scores", *scores, "--split", args.note_split, "--out", str(table), "-q"]))
    result = read_json(table.with_suffix(".json"), "pseudo-label table json")
    result["run"] = {
        "voc_root": str(args.voc_root), "ids": str(id_list), "device": args.device,
        "models": {key: {"path": str(path), "sha256": file_sha256(path)} for key, path in models.items()},
        "code": code_version(), "machine": platform.processor() or platform.machine(),
    }
    return result


def _check(code: int) -> None:
    if code != 0:
        raise SystemExit(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voc-root", type=Path, required=True, help="a VOC2012-layout folder")
    parser.add_argument("--ids", type=Path, default=None, help="id list (default: ImageSets/Segmentation/<split>)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--note-split", default="images (real VOC)", help="how the table names the images")
    parser.add_argument("--demo", type=Path, default=Path("demo_out"), help="a finished demo run's results folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=None, help="keep the labels here (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    args = parser.parse_args()
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        emit(run(args, args.work), args.out)
        return
    with tempfile.TemporaryDirectory(prefix="voc-protocol-") as work:
        emit(run(args, Path(work)), args.out)


if __name__ == "__main__":
    main()
