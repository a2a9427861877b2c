"""Inference speed of S4Net against torchvision Mask R-CNN and a bare backbone, in one run.

Prints (and optionally writes) JSON. Everything is timed in the same process on the
same random 320x320 inputs, so the ratios are meaningful even where absolute
numbers are not. Mask R-CNN is forced to return 20 detections
(``box_score_thresh=0``, ``box_detections_per_img=20``) as S4Net does.

    python bench/speed.py --threads 2 --out bench/results/speed_cpu.json
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s4net import S4NetConfig, build_model, __version__  # noqa: E402
from report import emit  # noqa: E402  (bench/report.py)
from timing import interleaved, timed  # noqa: E402  (bench/timing.py)
from s4net.models.fusion import fold_batchnorm  # noqa: E402


def s4net_model(backbone: str, size: int, detections: int, device: torch.device, crop: bool = True) -> torch.nn.Module:
    """S4Net as ``s4net predict`` runs it: eval mode, frozen BatchNorm folded into the convs."""
    config = S4NetConfig(backbone=backbone, image_size=size, detections_per_image=detections, branch_crop=crop)
    return build_model(config).to(device).fold_batchnorm()


def stage_times(model: torch.nn.Module, images: torch.Tensor, warmup: int, repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds of each S4Net stage, run one after the other on the same input."""
    import torch.nn.functional as F

    from s4net.models.detection import select_proposals

    cfg = model.config
    batch, sizes = model.preprocess(images)
    c = model.backbone(batch)
    levels = model.fpn(c)
    pyramid = list(levels.values())
    logits, deltas = model.head(pyramid)
    anchors, per_level = model._anchors([tuple(p.shape[-2:]) for p in pyramid], batch.device)
    features = F.relu(model.compress(levels["p3"]))

    def proposals():
        return select_proposals(logits, deltas, anchors, per_level, model.box_coder, (cfg.image_size,) * 2,
                                cfg.pre_nms_top_n, cfg.nms_iou, cfg.detections_per_image, cfg.min_box_size)

    found = proposals()
    boxes = torch.cat([b for b, _ in found])
    index = torch.cat([torch.full((len(b),), i, dtype=torch.long, device=device) for i, (b, _) in enumerate(found)])
    stages = {
        "preprocess": lambda: model.preprocess(images),
        "backbone": lambda: model.backbone(batch),
        "fpn": lambda: model.fpn(c),
        "head": lambda: model.head(pyramid),
        "compress": lambda: F.relu(model.compress(levels["p3"])),
        "proposals": proposals,
        "branch": lambda: model.segment(features, boxes, index),
        "proposals+branch+paste": lambda: model._detect(logits, deltas, anchors, per_level, features, sizes),
        "whole": lambda: model(images),
    }
    return {name: timed(fn, warmup, repeats, device)["median_s"] for name, fn in stages.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="also time autocast (CUDA)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd S4Net backbone")
    parser.add_argument("--backbones", nargs="*", default=["resnet50", "resnet101", "vgg16", "mobilenet_v2"])
    parser.add_argument("--proposals", type=int, nargs="*", default=[1, 5, 20, 50])
    parser.add_argument("--skip-maskrcnn", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    size = args.size
    report: dict[str, object] = {
        "benchmark": "s4net inference speed",
        "s4net_version": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "threads": args.threads,
        "input": [size, size],
        "note": "random weights and inputs; detections forced to the same count for both detectors; "
        "S4Net runs as `s4net predict` does (frozen BatchNorm folded into the convs); the contenders are "
        "timed in turns. With random weights S4Net's proposals are not realistic boxes, so the branch is also "
        "timed alone on random 16-112 px boxes against the number of proposals",
        "runs": [],
    }
    runs: list[dict[str, object]] = report["runs"]  # type: ignore[assignment]
    precisions = [("fp32", False)] + ([("amp", True)] if args.amp and device.type == "cuda" else [])

    for batch in args.batch:
        images = torch.rand(batch, 3, size, size, device=device)
        image_list = list(images)
        for precision, amp in precisions:
            with torch.inference_mode():
                resnet = torchvision.models.resnet50(weights=None).eval().to(device)
                resnet.fc = torch.nn.Identity()
                resnet_folded = copy.deepcopy(resnet)
                fold_batchnorm(resnet_folded)  # the same network with BatchNorm folded, as S4Net runs its backbone
                model = s4net_model("resnet50", size, 20, device)
                contenders = {
                    "resnet50 (bare forward)": lambda: resnet(images),
                    "resnet50 (bare forward, BatchNorm folded)": lambda: resnet_folded(images),
                    "s4net resnet50": lambda: model(images),
                }
                if not args.skip_maskrcnn:
                    maskrcnn = torchvision.models.detection.maskrcnn_resnet50_fpn(
                        weights=None, weights_backbone=None, num_classes=2, box_score_thresh=0.0,
                        box_detections_per_img=20, min_size=size, max_size=size,
                    ).eval().to(device)
                    contenders["torchvision maskrcnn_resnet50_fpn"] = lambda: maskrcnn(image_list)
                with torch.autocast(device.type, enabled=amp):
                    times = interleaved(contenders, args.warmup, args.repeats, device)
                base = times["resnet50 (bare forward)"]["median_s"]
                folded = times["resnet50 (bare forward, BatchNorm folded)"]["median_s"]
                for name, t in times.items():
                    entry: dict[str, object] = {"model": name, "batch": batch, "precision": precision, **t}
                    if name.startswith("s4net") or name.startswith("torchvision"):
                        entry["images_per_s"] = batch / t["median_s"]
                        entry["time_vs_bare_resnet50"] = t["median_s"] / base
                        entry["time_vs_bare_resnet50_folded"] = t["median_s"] / folded
                    runs.append(entry)
                s4_entry = next(r for r in runs[-len(times):] if r["model"] == "s4net resnet50")
                s4_entry["stages_median_s"] = stage_times(model, images, args.warmup, args.repeats, device)
                if not args.skip_maskrcnn:
                    s4_entry["speedup_vs_maskrcnn"] = times["torchvision maskrcnn_resnet50_fpn"]["median_s"] / times["s4net resnet50"]["median_s"]
                    runs[-1]["detections"] = [len(o["boxes"]) for o in maskrcnn(image_list)]
                    del maskrcnn
                if args.compile:
                    model.backbone = torch.compile(model.backbone)
                    compiled = timed(lambda: model(images), args.warmup + 2, args.repeats, device)
                    runs.append({
                        "model": "s4net resnet50 (compiled backbone)", "batch": batch, "precision": precision,
                        **compiled, "images_per_s": batch / compiled["median_s"],
                    })
                del model

    with torch.inference_mode():
        images = torch.rand(1, 3, size, size, device=device)
        for backbone in args.backbones:
            model = s4net_model(backbone, size, 20, device)
            t = timed(lambda: model(images), args.warmup, args.repeats, device)
            runs.append({"model": f"s4net {backbone}", "batch": 1, "precision": "fp32", **t, "images_per_s": 1 / t["median_s"], "table": 3})
        # segmentation-branch cost against the number of proposals (features fixed)
        model = s4net_model("resnet50", size, 20, device)
        features = torch.relu(torch.randn(1, model.config.compress_channels, size // 8, size // 8, device=device))
        generator = torch.Generator().manual_seed(0)
        for crop in (True, False):
            model.config.branch_crop = crop
            for count in args.proposals:
                xy = torch.rand(count, 2, generator=generator) * size * 0.7
                wh = 16 + torch.rand(count, 2, generator=generator) * size * 0.3
                boxes = torch.cat([xy, (xy + wh).clamp(max=size)], 1).to(device)
                index = torch.zeros(count, dtype=torch.long, device=device)
                t = timed(lambda: model.segment(features, boxes, index), args.warmup, args.repeats, device)
                runs.append({"model": "s4net segmentation branch", "proposals": count, "branch_crop": crop, **t})

    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
