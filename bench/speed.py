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

``--amp`` adds rows under autocast (bfloat16 on CPU; on CUDA bfloat16 where the GPU
supports it, else float16), each precision against its own baselines. The JSON is
rewritten (atomically) after every row, and a configuration that fails is recorded
with its error while the next one runs, so a crash never loses the rows before it.
On CUDA every row also carries its peak GPU memory. ``--groupings`` times S4Net with
each way of grouping its branch windows (see :func:`s4net.models.windows.branch_groups`;
on CUDA, which is fastest is not yet measured: that is what this flag is for), and
``--compile`` adds S4Net with its dense part compiled.

    python -m bench.speed --threads 2 --out bench/results/speed_cpu.json
    python -m bench.speed --threads 2 --amp --backbones --proposals --out bench/results/speed_cpu_bf16.json
    python -m bench.speed --device cuda --batch 1 8 --amp --groupings cost coarse single --compile \
        --out bench/results/speed_cuda.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torchvision

import s4net.models.s4net as s4net_module
from bench.memory import peak_rss_mib
from bench.report import emit
from bench.timing import interleaved, timed
from s4net import S4NetConfig, __version__, build_model
from s4net.io.atomic import atomic_write_text
from s4net.models.fusion import fold_batchnorm
from s4net.models.windows import BRANCH_GROUPINGS

log = logging.getLogger(__name__)

BOX_SIDES = {"objects": (16.0, 112.0), "salient": (150.0, 300.0)}
TARGET_TIME_VS_BARE = 1.6
TARGET_SPEEDUP_VS_MASKRCNN = 4.0


@dataclass(frozen=True)
class Precision:
    """A row's arithmetic: ``fp32``, or autocast to ``dtype`` (``bf16``, ``fp16``)."""

    name: str
    dtype: torch.dtype | None

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """Autocast to ``dtype`` on ``device``; a no-op for fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)


FP32 = Precision("fp32", None)


def amp_precision(device: torch.device) -> Precision:
    """Autocast's precision: bfloat16 on CPU; on CUDA bfloat16 where the GPU supports it, else float16."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return Precision("fp16", torch.float16)
    return Precision("bf16", torch.bfloat16)


class Recorder:
    """The report's rows, rewritten to ``out`` (atomically) after every row, so no crash loses the rows before it."""

    def __init__(self, report: dict[str, Any], out: Path | None) -> None:
        self.report = report
        self.out = out
        self.rows: list[dict[str, Any]] = report.setdefault("runs", [])

    def write(self) -> None:
        """Rewrite ``out`` with the report as it stands."""
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out, json.dumps(self.report, indent=2) + "\n")

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        """Append one row and rewrite ``out``; returns the row."""
        self.rows.append(row)
        self.write()
        return row

    def failed(self, row: dict[str, Any], exc: BaseException) -> dict[str, Any]:
        """Record a row whose configuration raised ``exc`` (its error instead of timings)."""
        log.warning("%s failed: %s", row.get("model"), error_text(exc))
        return self.add({**row, "error": error_text(exc)})


def error_text(exc: BaseException) -> str:
    """One line naming the exception (the first line of its message)."""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0] if message else ''}"


def time_contenders(contenders: dict[str, Callable[[], object]], precision: Precision, warmup: int, repeats: int,
                    device: torch.device) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Timings of the contenders that run under ``precision`` (taken in turns) and the errors of those that do not.

    Each contender first runs once on its own: one that raises is left out of the timing and
    reported by name, so the others are still timed. On CUDA each timed contender also gets
    its peak GPU memory (``peak_gpu_mib``: all allocated at its peak, the resident models
    included; ``peak_gpu_work_mib``: above what was allocated when it started).
    """
    errors: dict[str, str] = {}
    working: dict[str, Callable[[], object]] = {}
    for name, fn in contenders.items():
        try:
            with precision.autocast(device):
                fn()
        except Exception as exc:  # noqa: BLE001 - a failing configuration is a result to record, not a crash
            errors[name] = error_text(exc)
        else:
            working[name] = fn
    if not working:
        return {}, errors
    try:
        with precision.autocast(device):
            times = interleaved(working, warmup, repeats, device)
    except Exception as exc:  # noqa: BLE001
        return {}, {**errors, **dict.fromkeys(working, error_text(exc))}
    if device.type == "cuda":
        for name, fn in working.items():
            torch.cuda.synchronize(device)
            start = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            with precision.autocast(device):
                fn()
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
            times[name]["peak_gpu_mib"] = round(peak / 2**20, 1)
            times[name]["peak_gpu_work_mib"] = round((peak - start) / 2**20, 1)
    return times, errors


def s4net_model(backbone: str, size: int, detections: int, device: torch.device) -> s4net_module.S4Net:
    """S4Net as ``s4net predict`` runs it: eval mode, BatchNorm folded, channels last.

    Built outside inference mode, as a loaded checkpoint is (so the branch keeps its background cached).
    """
    config = S4NetConfig(backbone=backbone, image_size=size, detections_per_image=detections)
    with torch.inference_mode(False):
        torch.manual_seed(0)  # the same weights in every model built here
        return build_model(config).to(device).for_inference(channels_last=True)


def with_grouping(model: s4net_module.S4Net, grouping: str, fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run with the model's branch windows grouped by ``grouping`` (contenders share one model)."""

    def run() -> object:
        model.branch_grouping = grouping
        return fn()

    return run


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


def branch_sweep(size: int, counts: list[int], warmup: int, repeats: int, device: torch.device,
                 groupings: Sequence[str] = ("auto",)) -> Iterator[dict[str, object]]:
    """Segmentation-branch seconds against the number of proposals, for each way of placing and grouping its
    windows (one row at a time)."""
    model = s4net_model("resnet50", size, 20, device)
    features = torch.relu(torch.randn(1, model.config.compress_channels, size // 8, size // 8, device=device))
    features = features.contiguous(memory_format=torch.channels_last)
    for count in counts:
        boxes = random_boxes(count, BOX_SIDES["objects"], size, seed=count, device=device)
        index = torch.zeros(count, dtype=torch.long, device=device)

        def whole_map():
            model.config.branch_crop = False
            try:
                return model.segment(features, boxes, index)
            finally:
                model.config.branch_crop = True

        exact = {}
        for grouping in groupings:
            name = "exact windows (inference)" if list(groupings) == ["auto"] else \
                f"exact windows (inference, grouping: {grouping})"
            exact[name] = with_grouping(model, grouping,
                                        lambda: model.segment(features, boxes, index, exact=True))
        times = interleaved({
            **exact,
            "receptive-radius margin (training)": lambda: model.segment(features, boxes, index, exact=False),
            "whole map": whole_map,
        }, warmup, repeats, device)
        for windows, t in times.items():
            yield {"model": "s4net segmentation branch", "proposals": count, "boxes": "objects", "windows": windows,
                   **t}


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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The bench's options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--batch", type=int, nargs="+", default=[1], help="batch sizes (e.g. 1 8)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--amp", action="store_true",
                        help="also time autocast: bfloat16 on CPU; on CUDA bfloat16 where supported, else float16")
    parser.add_argument("--no-fp32", action="store_true", help="time only the --amp precision")
    parser.add_argument("--groupings", nargs="+", choices=BRANCH_GROUPINGS, default=["auto"],
                        help="S4Net's branch window groupings to compare (default: auto only)")
    parser.add_argument("--compile", action="store_true", help="also time S4Net with its dense part compiled")
    parser.add_argument("--backbones", nargs="*", default=["resnet50", "resnet101", "vgg16", "mobilenet_v2"])
    parser.add_argument("--proposals", type=int, nargs="*", default=[1, 5, 20, 50])
    parser.add_argument("--skip-maskrcnn", action="store_true")
    parser.add_argument("--skip-memory", action="store_true", help="no peak-RSS processes (CPU)")
    parser.add_argument("--out", type=Path, help="JSON to write (rewritten after every row)")
    args = parser.parse_args(argv)
    if args.no_fp32 and not args.amp:
        parser.error("--no-fp32 needs --amp")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda asked for but torch sees no CUDA device")
    return args


def s4net_contenders(model: s4net_module.S4Net, images: torch.Tensor, size: int, device: torch.device,
                     groupings: Sequence[str], label: str = "") -> dict[str, Callable[[], object]]:
    """S4Net on its own proposals and on seeded boxes of each size range, once per branch grouping."""
    contenders: dict[str, Callable[[], object]] = {}
    for grouping in groupings:
        suffix = label + ("" if list(groupings) == ["auto"] else f", grouping: {grouping}")
        contenders[f"s4net resnet50 [proposals: random-weight head{suffix}]"] = with_grouping(
            model, grouping, lambda: model(images))
        for name, sides in BOX_SIDES.items():
            boxes = random_boxes(20, sides, size, seed=0, device=device)
            contenders[f"s4net resnet50 [proposals: {name} boxes{suffix}]"] = with_grouping(
                model, grouping, with_proposals(lambda: model(images), boxes))
    return contenders


def main_rows(recorder: Recorder, batch: int, precision: Precision, args: argparse.Namespace,
              device: torch.device) -> None:
    """One batch size at one precision: the baselines, S4Net (each grouping, compiled) and Mask R-CNN, in turns."""
    size = args.size
    base = {"batch": batch, "precision": precision.name}
    torch.manual_seed(0)
    images = torch.rand(batch, 3, size, size, device=device)
    image_list = list(images)
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
            **s4net_contenders(model, images, size, device, args.groupings),
        }
        if args.compile:
            compiled = s4net_model("resnet50", size, 20, device).compile_dense()
            contenders.update(s4net_contenders(compiled, images, size, device, args.groupings[:1],
                                               ", dense part compiled"))
        maskrcnn = None
        if not args.skip_maskrcnn:
            maskrcnn = maskrcnn_model(size, device)
            contenders["torchvision maskrcnn_resnet50_fpn"] = lambda: maskrcnn(image_list)
        times, errors = time_contenders(contenders, precision, args.warmup, args.repeats, device)
        bare = times.get("resnet50 (bare forward)", {}).get("median_s")
        tuned_s = times.get("resnet50 (bare forward, BatchNorm folded, channels last)", {}).get("median_s")
        maskrcnn_s = times.get("torchvision maskrcnn_resnet50_fpn", {}).get("median_s")
        staged = False
        for name in contenders:
            if name in errors:
                recorder.add({"model": name, **base, "error": errors[name]})
                continue
            t = times[name]
            entry: dict[str, object] = {"model": name, **base, **t, "images_per_s": batch / t["median_s"]}
            if name.startswith("s4net") or name.startswith("torchvision"):
                if bare is not None:
                    entry["time_vs_bare_resnet50"] = t["median_s"] / bare
                if tuned_s is not None:
                    entry["time_vs_tuned_resnet50"] = t["median_s"] / tuned_s
            if name.startswith("s4net"):
                if "time_vs_bare_resnet50" in entry:
                    entry["meets_time_target"] = entry["time_vs_bare_resnet50"] <= TARGET_TIME_VS_BARE
                if maskrcnn_s is not None:
                    entry["speedup_vs_maskrcnn"] = maskrcnn_s / t["median_s"]
                    entry["meets_speedup_target"] = entry["speedup_vs_maskrcnn"] >= TARGET_SPEEDUP_VS_MASKRCNN
            if name.startswith("torchvision") and maskrcnn is not None:
                with precision.autocast(device):
                    entry["detections"] = [len(o["boxes"]) for o in maskrcnn(image_list)]
            if name.startswith("s4net resnet50 [proposals: random-weight head") and not staged:
                staged = True  # the stages of the first S4Net row (its first grouping), uncompiled
                model.branch_grouping = args.groupings[0]
                try:
                    with precision.autocast(device):
                        entry["stages_median_s"] = stage_times(model, images, args.warmup, args.repeats, device)
                except Exception as exc:  # noqa: BLE001
                    entry["stages_error"] = error_text(exc)
            recorder.add(entry)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench; the report goes to stdout and, with ``--out``, to that file after every row."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as s4net predict runs on CUDA
    size = args.size
    amp = amp_precision(device)
    precisions = ([] if args.no_fp32 else [FP32]) + ([amp] if args.amp else [])
    report: dict[str, object] = {
        "benchmark": "s4net inference speed",
        "s4net_version": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else platform.processor() or platform.machine()),
        "threads": args.threads,
        "input": [size, size],
        "precisions": [p.name for p in precisions],
        "groupings": args.groupings,
        "compile": args.compile,
        "note": "random weights and inputs; 20 detections for both detectors; S4Net runs as `s4net predict` does "
        "(BatchNorm folded, channels last, exact branch windows); the contenders are timed in turns. "
        "`proposals` says where S4Net's boxes came from: its own random-weight head, or seeded random boxes "
        f"with sides in {BOX_SIDES} px. Each precision's ratios are against the baselines of that precision; "
        "a row with `error` failed (the others still ran)",
        "targets": {"time_vs_bare_resnet50_at_most": TARGET_TIME_VS_BARE,
                    "speedup_vs_maskrcnn_at_least": TARGET_SPEEDUP_VS_MASKRCNN},
        "runs": [],
    }
    if hasattr(os, "getloadavg"):  # other work on the machine shows here: the ratios hold better than the seconds
        report["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    if device.type == "cpu":
        try:
            report["cpu_bf16_supported"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            report["cpu_bf16_supported"] = None
    else:
        report["cuda_bf16_supported"] = torch.cuda.is_bf16_supported()
    recorder = Recorder(report, args.out)
    recorder.write()

    for batch in args.batch:
        for precision in precisions:
            try:
                main_rows(recorder, batch, precision, args, device)
            except Exception as exc:  # noqa: BLE001 - e.g. a model that cannot be built at this size
                recorder.failed({"model": "(all contenders)", "batch": batch, "precision": precision.name}, exc)

    with torch.inference_mode():
        images = torch.rand(1, 3, size, size, device=device)
        boxes = random_boxes(20, BOX_SIDES["objects"], size, seed=0, device=device)
        for backbone in args.backbones:
            row = {"model": f"s4net {backbone}", "batch": 1, "precision": "fp32", "table": 3}
            try:
                model = s4net_model(backbone, size, 20, device)
                t = interleaved({
                    "random-weight head": lambda: model(images),
                    "objects boxes": with_proposals(lambda: model(images), boxes),
                }, args.warmup, args.repeats, device)
            except Exception as exc:  # noqa: BLE001
                recorder.failed(row, exc)
                continue
            for proposals, timing in t.items():
                recorder.add({**row, "proposals": proposals, **timing, "images_per_s": 1 / timing["median_s"]})
        try:
            for row in branch_sweep(size, args.proposals, args.warmup, args.repeats, device, args.groupings):
                recorder.add(row)
        except Exception as exc:  # noqa: BLE001
            recorder.failed({"model": "s4net segmentation branch"}, exc)

    if device.type == "cpu" and not args.skip_memory:
        report["memory_note"] = ("peak_rss_mib: a fresh process running 3 batch-1 float32 forwards of that "
                                 "contender alone")
        for entry in recorder.rows:
            if entry["model"] in MEMORY_CONTENDERS and entry.get("batch") == 1 and entry.get("precision") == "fp32" \
                    and "error" not in entry and not (args.skip_maskrcnn and entry["model"].startswith("torchvision")):
                entry.update(peak_rss_mib(memory_work, entry["model"], size, args.threads))
                recorder.write()
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
