"""The peer row of Tables 1 and 3: torchvision Mask R-CNN trained and scored as S4Net is.

What a user would pick instead of S4Net, under S4Net's own conditions: the same
backbone (from scratch, BatchNorm), the same COCO salient-instance json, the same
input size (images squashed to S x S), the same batches (S4Net's seeded sampler: same
images, flips and zooms in the same order), the same SGD schedule (iterations, lr,
steps, warm-up, weight decay, gradient clipping, bfloat16 autocast on CPU) and class-agnostic (one foreground
class). It is scored by ``s4net evaluate``'s own code (mask mAP@0.5/0.7, all and
occluded images) and its images/s is measured the same way (decoding included).

    python tools/maskrcnn_peer.py train --annotations W/salient/train.json --images W/salient/images \\
        --out OUT --backbone resnet18 --size 128 --iterations 2600 --batch-size 8 --lr 0.02 \\
        --lr-steps 2000 2420 --warmup 50 --scale-jitter 0.8 1.25
    python tools/maskrcnn_peer.py evaluate --checkpoint OUT/model_final.pt \\
        --annotations W/salient/test.json --images W/salient/images --out OUT/test_metrics.json

Training resumes from ``OUT/checkpoints/last.pt`` (atomic, every ``--checkpoint-every``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s4net.checkpoint import fit_weights  # noqa: E402
from s4net.clitools import add_verbosity, command_parser, positive_float, positive_int, run  # noqa: E402
from s4net.errors import InputError  # noqa: E402
from s4net.io.atomic import write_json  # noqa: E402
from s4net.io.states import read_state, save_state  # noqa: E402
from s4net.train import (  # noqa: E402
    MetricsLog,
    TrainConfig,
    autocast_context,
    learning_rate_factor,
    newest_readable_state,
    optimizer_step,
    parameter_groups,
    resolve_cpu_bf16,
    resolve_device,
    restore_training,
)

log = logging.getLogger("maskrcnn_peer")

FORMAT = "maskrcnn-peer"
VERSION = 1
PEER_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")


def build_maskrcnn(backbone: str, size: int, detections: int = 20) -> nn.Module:
    """Class-agnostic Mask R-CNN with a ResNet-FPN from scratch (BatchNorm), fixed ``size`` x ``size`` input.

    ``detections`` boxes are kept per image whatever their score, as S4Net keeps its
    ``detections_per_image``.
    """
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    if backbone not in PEER_BACKBONES:
        raise InputError(None, f"Mask R-CNN peer backbone {backbone!r}: expected one of {list(PEER_BACKBONES)}")
    body = resnet_fpn_backbone(backbone_name=backbone, weights=None, norm_layer=nn.BatchNorm2d, trainable_layers=5)
    return MaskRCNN(body, num_classes=2, min_size=size, max_size=size, fixed_size=(size, size),
                    box_detections_per_img=detections, box_score_thresh=0.0)


def save_peer(path: Path, model: nn.Module, config: dict[str, Any], **state: Any) -> None:
    save_state(path, FORMAT, VERSION, config=config, model=model.state_dict(), **state)


def read_peer(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    return read_state(path, FORMAT, VERSION, "Mask R-CNN peer checkpoint", map_location=map_location)


def peer_targets(targets: list[dict[str, torch.Tensor]], device: torch.device) -> list[dict[str, torch.Tensor]]:
    """S4Net's training targets (soft masks, boxes) as Mask R-CNN's: binary masks, class 1, no empty boxes."""
    out = []
    for target in targets:
        boxes = target["boxes"]
        keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
        out.append({"boxes": boxes[keep].to(device), "labels": torch.ones(int(keep.sum()), dtype=torch.int64, device=device),
                    "masks": (target["masks"][keep] >= 0.5).to(torch.uint8).to(device)})
    return out


def train_peer(args: argparse.Namespace) -> Path:
    """Train (or resume) the peer with S4Net's schedule and batches; returns ``OUT/model_final.pt``."""
    from s4net.data.coco import SalientInstanceDataset
    from s4net.data.training import SeededBatches, TrainingSet, collate

    device = resolve_device(args.device)
    cfg = TrainConfig(annotations=args.annotations, images=args.images, out=args.out, iterations=args.iterations,
                      batch_size=args.batch_size, lr=args.lr, lr_steps=tuple(args.lr_steps), warmup_iterations=args.warmup,
                      seed=args.seed, scale_jitter=tuple(args.scale_jitter) if args.scale_jitter else None,
                      grad_clip=args.grad_clip, device=args.device, cache=True,
                      cpu_bf16=resolve_cpu_bf16(args.cpu_bf16) and device.type == "cpu")
    source = SalientInstanceDataset(cfg.annotations, cfg.images)
    out = Path(args.out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)  # only once the inputs are known to be readable
    final_path, last_path, metrics_path = out / "model_final.pt", out / "checkpoints" / "last.pt", out / "metrics.jsonl"
    model_config = {"backbone": args.backbone, "size": args.size, "detections": args.detections}
    key = {**cfg.resume_key(), "model": model_config}
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = build_maskrcnn(args.backbone, args.size, args.detections).to(device)
    optimizer = torch.optim.SGD(parameter_groups(model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    state, state_path = newest_readable_state([last_path], lambda p: read_peer(p, device))
    start = restore_training(state, key, state_path, model, optimizer, scaler, metrics_path) if state else 0
    write_json(out / "train_config.json", {**cfg.to_dict(), "model": model_config, "peer": "torchvision maskrcnn"}, indent=2)
    if start >= cfg.iterations and final_path.exists():
        return final_path
    sampler = SeededBatches(len(source), cfg.batch_size, cfg.seed, start, cfg.iterations, cfg.hflip, cfg.scale_jitter)
    loader = torch.utils.data.DataLoader(TrainingSet(source, args.size, cache=cfg.cache), batch_sampler=sampler,
                                         collate_fn=collate, num_workers=0)
    model.train()
    bar = tqdm(total=cfg.iterations, initial=start, disable=args.quiet, desc="train Mask R-CNN peer", unit="it")
    with metrics_path.open("a", encoding="utf-8") as metrics:
        log_metrics = MetricsLog(metrics, cfg.batch_size, cfg.log_every, cfg.iterations)
        for iteration, (images, targets) in enumerate(loader, start=start):
            factor = learning_rate_factor(iteration, cfg)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * factor
            torch.manual_seed(cfg.seed * 1_000_003 + iteration)  # the heads' sampling: a function of the iteration
            with autocast_context(device, True, cfg.cpu_bf16):
                losses = model(list(images.to(device)), peer_targets(targets, device))
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise RuntimeError(f"Mask R-CNN peer loss is not finite at iteration {iteration}")
            optimizer_step(loss, model, optimizer, scaler, cfg.grad_clip)
            done = iteration + 1
            bar.update(1)
            log_metrics.add(done, cfg.lr * factor, {k: float(v.detach()) for k, v in losses.items()})
            if done % args.checkpoint_every == 0 or done == cfg.iterations:
                save_peer(last_path, model, model_config, optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
                          iteration=done, train=key)
    bar.close()
    save_peer(final_path, model, model_config, iteration=cfg.iterations, train=key)
    return final_path


def _train(args: argparse.Namespace) -> int:
    path = train_peer(args)
    print(f"Mask R-CNN peer ({args.backbone}, {args.size} px): wrote {path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from s4net.evaluation import evaluate_predictions
    from s4net.inference import predict_annotated

    device = resolve_device(args.device)
    payload = read_peer(args.checkpoint, device)
    config = payload.get("config")
    try:
        model = build_maskrcnn(config["backbone"], config["size"], config["detections"])
    except (KeyError, TypeError) as exc:
        raise InputError(args.checkpoint, f"bad config in Mask R-CNN peer checkpoint ({exc.__class__.__name__}: {exc})") from None
    fit_weights(model, payload["model"], args.checkpoint)
    model.to(device).eval()
    start = time.perf_counter()
    document, results = predict_annotated(model, args.annotations, args.images, args.batch_size, device,
                                          progress=not args.quiet)
    seconds = time.perf_counter() - start
    metrics = evaluate_predictions(document, results, protocol="coco", max_detections=config["detections"])
    metrics.update(checkpoint=str(args.checkpoint), annotations=str(args.annotations), batch_size=args.batch_size,
                   images_per_s=len(document["images"]) / seconds if seconds > 0 else None, model="torchvision maskrcnn",
                   **{f"model_{k}": v for k, v in config.items()})
    write_json(args.out, metrics, indent=2)
    shown = ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k.startswith("mAP") and isinstance(v, float))
    print(f"Mask R-CNN peer: {shown}, {metrics['images_per_s']:.1f} images/s; wrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser, commands = command_parser("maskrcnn_peer", "torchvision Mask R-CNN trained and scored as S4Net is.", "1")
    train = commands.add_parser("train", help="train on a COCO salient-instance json with S4Net's schedule and batches")
    train.add_argument("--annotations", type=Path, required=True)
    train.add_argument("--images", type=Path, required=True)
    train.add_argument("--out", type=Path, required=True)
    train.add_argument("--backbone", default="resnet18", choices=PEER_BACKBONES)
    train.add_argument("--size", type=positive_int, default=128, help="square input size (px)")
    train.add_argument("--detections", type=positive_int, default=20, help="detections kept per image")
    train.add_argument("--iterations", type=positive_int, default=2600)
    train.add_argument("--batch-size", type=positive_int, default=8)
    train.add_argument("--lr", type=positive_float, default=0.02)
    train.add_argument("--lr-steps", type=positive_int, nargs="+", default=[2000, 2420])
    train.add_argument("--warmup", type=int, default=50)
    train.add_argument("--scale-jitter", type=positive_float, nargs=2, default=None, metavar=("LO", "HI"))
    train.add_argument("--grad-clip", type=positive_float, default=5.0)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--cpu-bf16", choices=("on", "off", "auto"), default="auto",
                       help="bfloat16 autocast on CPU, as s4net train (auto: where the CPU supports it)")
    train.add_argument("--device", default="auto")
    train.add_argument("--checkpoint-every", type=positive_int, default=200)
    add_verbosity(train)
    train.set_defaults(handler=_train)
    evaluate = commands.add_parser("evaluate", help="mask mAP and images/s on a COCO salient-instance json")
    evaluate.add_argument("--checkpoint", type=Path, required=True)
    evaluate.add_argument("--annotations", type=Path, required=True)
    evaluate.add_argument("--images", type=Path, required=True)
    evaluate.add_argument("--out", type=Path, required=True)
    evaluate.add_argument("--batch-size", type=positive_int, default=4)
    evaluate.add_argument("--device", default="auto")
    add_verbosity(evaluate)
    evaluate.set_defaults(handler=_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
