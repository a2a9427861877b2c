"""Instances against saliency cues against ground truth, on a synthetic world, in one run (JSON out).

For each cue (``instances``, ``saliency``) it writes proxy labels for the world's
ImageNet-like subset with the given S4Net checkpoint and scores them against the
generator's class masks; then it trains one segmenter per label source (the two
cues and the ground-truth masks, same images, same recipe) and scores each on the
world's VOC val split. Every step resumes, so a killed run picks up where it was.

    python tools/compare_cues.py --world demo_out/data --checkpoint demo_out/s4net/model_final.pt \\
        --out demo_out/compare --iterations 1500 --json demo_out/compare/compare_cues.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.datasets.voc import read_voc_label
from pipeline.proxy_labels.runner import ProxyLabelSettings, run_proxy_labels
from pipeline.segmenter.evaluate import evaluate_segmenter
from pipeline.segmenter.metrics import score_folders, summarise
from pipeline.segmenter.model import SegmenterConfig
from pipeline.segmenter.train import SegTrainConfig, train_segmenter
from s4net.io.atomic import write_json

CUES = ("instances", "saliency")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True, help="synthetic world (holds imagenet/ and voc/)")
    parser.add_argument("--checkpoint", type=Path, required=True, help="S4Net checkpoint")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True, help="where to write the comparison")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    imagenet, voc = args.world / "imagenet", args.world / "voc" / "VOC2012"
    report: dict = {"world": str(args.world), "checkpoint": str(args.checkpoint), "proxy_labels": {}, "segmenters": {},
                    "recipe": {"encoder": args.encoder, "iterations": args.iterations, "batch_size": args.batch_size,
                               "crop": args.crop, "lr": args.lr, "seed": args.seed}}
    sources = {}
    for cue in CUES:
        start = time.perf_counter()
        out = args.out / f"proxy_{cue}"
        run_proxy_labels(args.checkpoint, imagenet, out, keywords=imagenet / "keywords.csv",
                         settings=ProxyLabelSettings(cue=cue), progress=not args.quiet)
        matrix, counts = score_folders(out / "labels", imagenet / "masks", read_voc_label)
        scores = summarise(matrix)
        report["proxy_labels"][cue] = {k: scores[k] for k in ("mIoU", "mIoU_labelled", "coverage")} | counts
        report["proxy_labels"][cue]["seconds"] = round(time.perf_counter() - start, 1)
        sources[cue] = out / "labels"
    sources["ground_truth"] = imagenet / "masks"
    for name, labels in sources.items():
        start = time.perf_counter()
        config = SegTrainConfig(images=imagenet, labels=labels, out=args.out / f"segmenter_{name}",
                                model=SegmenterConfig(encoder=args.encoder), iterations=args.iterations,
                                batch_size=args.batch_size, crop=args.crop, lr=args.lr, seed=args.seed, device="cpu")
        final = train_segmenter(config, progress=not args.quiet)
        scores = evaluate_segmenter(final, voc, "val", progress=not args.quiet)
        report["segmenters"][name] = {"mIoU": scores["mIoU"], "per_class_iou": scores["per_class_iou"],
                                      "seconds": round(time.perf_counter() - start, 1)}
    seg = report["segmenters"]
    report["instances_minus_saliency_points"] = 100 * (seg["instances"]["mIoU"] - seg["saliency"]["mIoU"])
    report["instances_over_ground_truth"] = seg["instances"]["mIoU"] / seg["ground_truth"]["mIoU"]
    report["targets"] = {
        "instances_beat_saliency_by_3_points": report["instances_minus_saliency_points"] >= 3.0,
        "instances_reach_0.85_of_ground_truth": report["instances_over_ground_truth"] >= 0.85,
    }
    write_json(args.json, report, indent=2)
    print(f"proxy-label mIoU: instances {100 * report['proxy_labels']['instances']['mIoU']:.1f}, "
          f"saliency {100 * report['proxy_labels']['saliency']['mIoU']:.1f}; VOC-val mIoU: "
          + ", ".join(f"{k} {100 * v['mIoU']:.1f}" for k, v in seg.items()) + f"; wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
