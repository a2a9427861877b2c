"""Inference speed of S4Net against torchvision Mask R-CNN and a bare backbone, in one run.

Prints (and optionally writes) JSON. Everything is timed in the same process on the
same random 320x320 inputs, so the ratios are meaningful even where absolute
numbers are not. Mask R-CNN is forced to return 20 detections
(``box_score_thresh=0``, ``box_detections_per_img=20``) as S4Net does.

S4Net's cost depends on the size of its proposals (the segmentation branch runs on a
window around each), and with random weights the proposals are not boxes a trained
model would give (mostly thin strips across the whole image). So S4Net is also timed
with its proposals replaced by seeded random boxes of fixed size ranges: ``objects``
(16-112 px sides, small and medium COCO objects at 320 px) and ``salient``
(150-300 px sides, the size of the salient objects in SOD-style photos). Mask R-CNN's
cost does not depend on the box sizes.

    python -m bench.speed --threads 2 --out bench/results/speed_cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import platform
from pathlib import Path
from typing import Callable, Iterator

import torch
import torchvision

import s4net.models.s4net as s4net_module
from bench.memory import peak_rss_mib
from bench.report import emit
from bench.timing import interleaved, timed
from s4net import S4NetConfig, __version__, build_model
from s4net.models.fusion import fold_batchnorm

BOX_SIDES = {"objects": (16.0, 112.0), "salient": (150.0, 300.0)}
TARGET_TIME_VS_BARE = 1.6
TARGET_SPEEDUP_VS_MASKRCNN = 4.0


def s4net_model(backbone: str, size: int, detections: int, device: torch.device) -> s4net_module.S4Net:
    """S4Net as ``s4net predict`` runs it: eval mode, BatchNorm folded, channels last.

    Built outside inference mode, as a loaded checkpoint is (so the branch keeps its background cached).
    """
    config = S4NetConfig(backbone=backbone, image_size=size, detections_per_image=detections)
    with torch.inference_mode(False):
        return build_model(config).to(device).for_inference(channels_last=True)


def random_boxes(count: int, sides: tuple[float, float], size: int, seed: int, device: torch.device) -> torch.Tensor:
    """Tensor[count, 4] seeded boxes with sides uniform in ``sides`` (px), inside a ``size`` square."""
    generator = torch.Generator().manual_seed(seed)
    wh = sides[0] + torch.rand(count, 2, generator=generator) * (sides[1] - sides[0])
    xy = torch.rand(count, 2, generator=generator) * (size - wh).clamp(min=0)
    return torch.cat([xy, xy + wh], 1).to(device)


@contextlib.contextmanager
def fixed_proposals(boxes: torch.Tensor) -> Iterator[None]:
    """Make S4Net's proposal step return ``boxes`` (with falling scores) for every image."""
    original = s4net_module.select_proposals

    def select(logits, *args, **kwargs):
        scores = torch.linspace(0.9, 0.1, len(boxes), device=boxes.device)
        return [(boxes, scores) for _ in range(logits.shape[0])]

    s4net_module.select_proposals = select
    try:
        yield
    finally:
        s4net_module.select_proposals = original


def with_proposals(fn: Callable[[], object], boxes: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with fixed_proposals(boxes):
            return fn()

    return run


def stage_times(model: s4net_module.S4Net, images: torch.Tensor, warmup: int, repeats: int,
                device: torch.device) -> dict[str, float]:
    """Median seconds of each S4Net stage (random-weight proposals), run one after the other on the same input."""
    import torch.nn.functional as F

    from s4net.models.detection import select_proposals

    cfg = model.config
    batch, sizes = model.preprocess(images)
    batch = batch.contiguous(memory_format=torch.channels_last) if model.channels_last else batch
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
        "branch": lambda: model.segment(features, boxes, index, exact=True),
        "proposals+branch+paste": lambda: model._detect(logits, deltas, anchors, per_level, features, sizes),
        "whole": lambda: model(images),
    }
    return {name: timed(fn, warmup, repeats, device)["median_s"] for name, fn in stages.items()}


def branch_sweep(size: int, counts: list[int], warmup: int, repeats: int,
                 device: torch.device) -> list[dict[str, object]]:
    """Segmentation-branch seconds against the number of proposals, for each way of placing its windows."""
    model = s4net_model("resnet50", size, 20, device)
    features = torch.relu(torch.randn(1, model.config.compress_channels, size // 8, size // 8, device=device))
    features = features.contiguous(memory_format=torch.channels_last)
    runs = []
    for count in counts:
        boxes = random_boxes(count, BOX_SIDES["objects"], size, seed=count, device=device)
        index = torch.zeros(count, dtype=torch.long, device=device)

        def whole_map():
            model.config.branch_crop = False
            try:
                return model.segment(features, boxes, index)
            finally:
                model.config.branch_crop = True

        times = interleaved({
            "exact windows (inference)": lambda: model.segment(features, boxes, index, exact=True),
            "receptive-radius margin (training)": lambda: model.segment(features, boxes, index, exact=False),
            "whole map": whole_map,
        }, warmup, repeats, device)
        for windows, t in times.items():
            runs.append({"model": "s4net segmentation branch", "proposals": count, "boxes": "objects",
                         "windows": windows, **t})
    return runs


def maskrcnn_model(size: int, device: torch.device) -> torch.nn.Module:
    """torchvision's Mask R-CNN R50-FPN (random weights, eval), forced to 20 detections at ``size``."""
    return torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=2, box_score_thresh=0.0, box_detections_per_img=20,
        min_size=size, max_size=size,
    ).eval().to(device)


def memory_work(name: str, size: int, threads: int, repeats: int = 3) -> None:
    """``repeats`` batch-1 float32 forwards of one main contender on the CPU, for its peak memory."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    images = torch.rand(1, 3, size, size)
    with torch.inference_mode():
        if name == "resnet50 (bare forward)":
            net = torchvision.models.resnet50(weights=None).eval()
            run = lambda: net(images)  # noqa: E731
        elif name == "torchvision maskrcnn_resnet50_fpn":
            net = maskrcnn_model(size, torch.device("cpu"))
            run = lambda: net(list(images))  # noqa: E731
        else:
            net = s4net_model("resnet50", size, 20, torch.device("cpu"))
            run = lambda: net(images)  # noqa: E731
        for _ in range(repeats):
            run()


MEMORY_CONTENDERS = ("resnet50 (bare forward)", "s4net resnet50 [proposals: random-weight head]",
                     "torchvision maskrcnn_resnet50_fpn")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="also time autocast (CUDA)")
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
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else platform.processor() or platform.machine()),
        "threads": args.threads,
        "input": [size, size],
        "note": "random weights and inputs; 20 detections for both detectors; S4Net runs as `s4net predict` does "
        "(BatchNorm folded, channels last, exact branch windows); the contenders are timed in turns. "
        "`proposals` says where S4Net's boxes came from: its own random-weight head, or seeded random boxes "
        f"with sides in {BOX_SIDES} px",
        "targets": {"time_vs_bare_resnet50_at_most": TARGET_TIME_VS_BARE,
                    "speedup_vs_maskrcnn_at_least": TARGET_SPEEDUP_VS_MASKRCNN},
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
                tuned = copy.deepcopy(resnet)
                fold_batchnorm(tuned)  # the same network with S4Net's inference tricks
                tuned = tuned.to(memory_format=torch.channels_last)
                tuned_images = images.contiguous(memory_format=torch.channels_last)
                model = s4net_model("resnet50", size, 20, device)
                contenders: dict[str, Callable[[], object]] = {
                    "resnet50 (bare forward)": lambda: resnet(images),
                    "resnet50 (bare forward, BatchNorm folded, channels last)": lambda: tuned(tuned_images),
                    "s4net resnet50 [proposals: random-weight head]": lambda: model(images),
                }
                for name, sides in BOX_SIDES.items():
                    boxes = random_boxes(20, sides, size, seed=0, device=device)
                    contenders[f"s4net resnet50 [proposals: {name} boxes]"] = with_proposals(
                        lambda: model(images), boxes)
                if not args.skip_maskrcnn:
                    maskrcnn = maskrcnn_model(size, device)
                    contenders["torchvision maskrcnn_resnet50_fpn"] = lambda: maskrcnn(image_list)
                with torch.autocast(device.type, enabled=amp):
                    times = interleaved(contenders, args.warmup, args.repeats, device)
                base = times["resnet50 (bare forward)"]["median_s"]
                tuned_base = times["resnet50 (bare forward, BatchNorm folded, channels last)"]["median_s"]
                maskrcnn_s = times.get("torchvision maskrcnn_resnet50_fpn", {}).get("median_s")
                for name, t in times.items():
                    entry: dict[str, object] = {"model": name, "batch": batch, "precision": precision, **t}
                    if name.startswith("s4net") or name.startswith("torchvision"):
                        entry["images_per_s"] = batch / t["median_s"]
                        entry["time_vs_bare_resnet50"] = t["median_s"] / base
                        entry["time_vs_tuned_resnet50"] = t["median_s"] / tuned_base
                    if name.startswith("s4net"):
                        entry["meets_time_target"] = entry["time_vs_bare_resnet50"] <= TARGET_TIME_VS_BARE
                        if maskrcnn_s is not None:
                            entry["speedup_vs_maskrcnn"] = maskrcnn_s / t["median_s"]
                            entry["meets_speedup_target"] = entry["speedup_vs_maskrcnn"] >= TARGET_SPEEDUP_VS_MASKRCNN
                    runs.append(entry)
                s4_entry = next(r for r in runs if r["model"] == "s4net resnet50 [proposals: random-weight head]"
                                and r["batch"] == batch)
                s4_entry["stages_median_s"] = stage_times(model, images, args.warmup, args.repeats, device)
                if not args.skip_maskrcnn:
                    runs[-1]["detections"] = [len(o["boxes"]) for o in maskrcnn(image_list)]
                    del maskrcnn
                del model

    with torch.inference_mode():
        images = torch.rand(1, 3, size, size, device=device)
        boxes = random_boxes(20, BOX_SIDES["objects"], size, seed=0, device=device)
        for backbone in args.backbones:
            model = s4net_model(backbone, size, 20, device)
            t = interleaved({
                "random-weight head": lambda: model(images),
                "objects boxes": with_proposals(lambda: model(images), boxes),
            }, args.warmup, args.repeats, device)
            for proposals, timing in t.items():
                runs.append({"model": f"s4net {backbone}", "batch": 1, "precision": "fp32", "proposals": proposals,
                             **timing, "images_per_s": 1 / timing["median_s"], "table": 3})
        runs.extend(branch_sweep(size, args.proposals, args.warmup, args.repeats, device))

    if device.type == "cpu":
        report["memory_note"] = ("peak_rss_mib: a fresh process running 3 batch-1 float32 forwards of that "
                                 "contender alone")
        for entry in runs:
            if entry["model"] in MEMORY_CONTENDERS and entry.get("batch") == 1 and entry.get("precision") == "fp32" \
                    and not (args.skip_maskrcnn and entry["model"].startswith("torchvision")):
                entry.update(peak_rss_mib(memory_work, entry["model"], size, args.threads))
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
