"""Inference speed of S4Net against torchvision Mask R-CNN and a bare backbone, in one run.

Prints (and optionally writes) JSON. Everything is timed in the same process on the
same random 320x320 inputs, so the ratios are meaningful even where absolute
numbers are not. Mask R-CNN is forced to return 20 detections
(``box_score_thresh=0``, ``box_detections_per_img=20``) as S4Net does.

    python bench/speed.py --threads 2 --out bench/results/speed_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s4net import S4NetConfig, build_model, __version__  # noqa: E402


def timed(fn: Callable[[], object], warmup: int, repeats: int, device: torch.device) -> dict[str, float]:
    """Median and spread of ``repeats`` calls after ``warmup`` calls (synchronising CUDA)."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}


def s4net_model(backbone: str, size: int, detections: int, device: torch.device, crop: bool = True) -> torch.nn.Module:
    config = S4NetConfig(backbone=backbone, image_size=size, detections_per_image=detections, branch_crop=crop)
    return build_model(config).eval().to(device)


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
        "note": "random weights and inputs; detections forced to the same count for both detectors",
        "runs": [],
    }
    runs: list[dict[str, object]] = report["runs"]  # type: ignore[assignment]
    precisions = [("fp32", False)] + ([("amp", True)] if args.amp and device.type == "cuda" else [])

    for batch in args.batch:
        images = torch.rand(batch, 3, size, size, device=device)
        image_list = list(images)
        for precision, amp in precisions:
            def ctx():
                return torch.autocast(device.type, enabled=amp)

            with torch.inference_mode():
                resnet = torchvision.models.resnet50(weights=None).eval().to(device)
                resnet.fc = torch.nn.Identity()

                def bare() -> None:
                    with ctx():
                        resnet(images)

                base = timed(bare, args.warmup, args.repeats, device)
                runs.append({"model": "resnet50 (bare forward)", "batch": batch, "precision": precision, **base})
                model = s4net_model("resnet50", size, 20, device)

                def s4() -> None:
                    with ctx():
                        model(images)

                s4_time = timed(s4, args.warmup, args.repeats, device)
                runs.append({
                    "model": "s4net resnet50", "batch": batch, "precision": precision, **s4_time,
                    "images_per_s": batch / s4_time["median_s"],
                    "time_vs_bare_resnet50": s4_time["median_s"] / base["median_s"],
                })
                if args.compile:
                    model.backbone = torch.compile(model.backbone)
                    compiled = timed(s4, args.warmup + 2, args.repeats, device)
                    runs.append({
                        "model": "s4net resnet50 (compiled backbone)", "batch": batch, "precision": precision,
                        **compiled, "images_per_s": batch / compiled["median_s"],
                    })
                if not args.skip_maskrcnn:
                    maskrcnn = torchvision.models.detection.maskrcnn_resnet50_fpn(
                        weights=None, weights_backbone=None, num_classes=2, box_score_thresh=0.0,
                        box_detections_per_img=20, min_size=size, max_size=size,
                    ).eval().to(device)

                    def mrcnn() -> None:
                        with ctx():
                            maskrcnn(image_list)

                    m_time = timed(mrcnn, args.warmup, args.repeats, device)
                    counts = [len(o["boxes"]) for o in maskrcnn(image_list)]
                    runs.append({
                        "model": "torchvision maskrcnn_resnet50_fpn", "batch": batch, "precision": precision,
                        **m_time, "images_per_s": batch / m_time["median_s"], "detections": counts,
                        "time_vs_bare_resnet50": m_time["median_s"] / base["median_s"],
                    })
                    runs[-2]["speedup_vs_maskrcnn"] = m_time["median_s"] / s4_time["median_s"]
                    del maskrcnn
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

    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
