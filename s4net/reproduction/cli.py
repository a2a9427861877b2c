"""The ``s4net`` verbs that reproduce the paper: ``explain`` (Fig. 6), ``ablation-table`` (Tables 1-3), ``peer``.

:func:`add_commands` adds them to the ``s4net`` command line; their work is in this
subpackage's modules.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from s4net.cli.framework import add_cpu_bf16, add_verbosity, named_pairs, positive_float, positive_int
from s4net.errors import InputError
from s4net.reproduction.ablation import METRICS


def _explain(args: argparse.Namespace) -> int:
    import torch

    from s4net.checkpoint import load_checkpoint
    from s4net.data.coco import SalientInstanceDataset
    from s4net.engine import resolve_device
    from s4net.io.images import save_image
    from s4net.reproduction.gradient_maps import gradient_map, render_gradient_maps

    device = resolve_device(args.device)
    models = [(path, load_checkpoint(path, map_location=device)) for path in args.checkpoint]
    sizes = {m.config.image_size for _, m in models}
    if len(sizes) != 1:
        raise InputError(args.checkpoint[-1], f"checkpoints differ in image_size {sorted(sizes)}")
    size = sizes.pop()
    runs = [(path, model, masking) for path, model in models for masking in (args.masking or [model.config.masking])]
    dataset = SalientInstanceDataset(args.annotations, args.images)
    args.out.mkdir(parents=True, exist_ok=True)
    written = 0
    for index in range(min(args.limit, len(dataset))):
        sample = dataset[index]
        if len(sample.boxes) == 0:
            continue
        largest = int((sample.masks.reshape(len(sample.masks), -1).sum(1)).argmax())
        image = torch.from_numpy(sample.image.copy()).permute(2, 0, 1).float() / 255.0
        box = torch.from_numpy(sample.boxes[largest])
        mask = torch.from_numpy(sample.masks[largest])
        maps = [gradient_map(model, image, box, mask, masking) for _, model, masking in runs]
        titles = [f"{masking} ({Path(path).parent.name or Path(path).stem})" for path, _, masking in runs]
        picture = render_gradient_maps(sample.image, maps, titles, size)
        save_image(args.out / f"{sample.image_id:06d}_gradients.png", picture)
        written += 1
    print(f"wrote {written} gradient-map panels to {args.out}")
    return 0


def _ablation_table(args: argparse.Namespace) -> int:
    import yaml

    from s4net.io.atomic import atomic_write_text, read_json, write_json
    from s4net.reproduction.ablation import markdown, plot, study_table

    runs: dict[str, list[dict]] = {}
    for variant, path in named_pairs(args.runs, "--runs", "VARIANT=METRICS_JSON"):
        runs.setdefault(variant, []).append(read_json(path, "metrics json"))
    paper = {}
    if args.paper is not None:
        try:
            paper = (yaml.safe_load(args.paper.read_text()) or {}).get(args.study, {})
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(args.paper, f"not a readable paper-numbers YAML ({exc.__class__.__name__})") from None
    peers = dict(named_pairs(args.peers, "--peers", "PEER=VARIANT"))
    try:
        table = study_table(args.study, runs, {str(k): v for k, v in paper.items()}, peers, tuple(args.metrics))
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    write_json(args.out, table, indent=2)
    text = markdown(table)
    if args.markdown is not None:
        atomic_write_text(args.markdown, text)
    if args.plot is not None:
        plot(table, args.plot)
    print(text, end="")
    return 0


def _peer_train(args: argparse.Namespace) -> int:
    from s4net.engine import resolve_cpu_bf16, resolve_device
    from s4net.engine.distributed import world_from_env
    from s4net.reproduction.maskrcnn_peer import PeerConfig, train_peer
    from s4net.train import TrainConfig

    try:
        device = resolve_device(args.device)
        cfg = TrainConfig(annotations=args.annotations, images=args.images, out=args.out, iterations=args.iterations,
                          batch_size=args.batch_size, lr=args.lr, lr_steps=tuple(args.lr_steps),
                          warmup_iterations=args.warmup, seed=args.seed,
                          scale_jitter=tuple(args.scale_jitter) if args.scale_jitter else None,
                          grad_clip=args.grad_clip, device=args.device, cache=True, workers=args.workers,
                          log_every=args.log_every, sync_bn=args.sync_bn, compile=args.compile,
                          cpu_bf16=resolve_cpu_bf16(args.cpu_bf16) and device.type == "cpu")
        config = PeerConfig(backbone=args.backbone, size=args.size, detections=args.detections)
    except ValueError as exc:
        raise InputError("command line", str(exc)) from None
    path = train_peer(cfg, config, args.checkpoint_every, progress=not args.quiet)
    if world_from_env().is_main:
        print(f"Mask R-CNN peer ({args.backbone}, {args.size} px): wrote {path}")
    return 0


def _peer_evaluate(args: argparse.Namespace) -> int:
    from s4net.io.atomic import write_json
    from s4net.reproduction.maskrcnn_peer import evaluate_peer

    metrics = evaluate_peer(args.checkpoint, args.annotations, args.images, args.batch_size, args.device,
                            progress=not args.quiet)
    write_json(args.out, metrics, indent=2)
    shown = ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k.startswith("mAP") and isinstance(v, float))
    print(f"Mask R-CNN peer: {shown}, {metrics['images_per_s']:.1f} images/s; wrote {args.out}")
    return 0


def _add_peer(commands) -> None:
    from s4net.reproduction.maskrcnn_peer import PeerConfig
    from s4net.reproduction.variants import PEER_BACKBONES

    defaults = PeerConfig()
    peer = commands.add_parser(
        "peer",
        help="the Mask R-CNN peer of Tables 1 and 3: torchvision Mask R-CNN trained and scored as S4Net is",
        description="Class-agnostic torchvision Mask R-CNN with S4Net's backbone (from scratch), data, batches, "
                    "schedule and input size; scored by s4net evaluate's code.",
    )
    verbs = peer.add_subparsers(dest="verb", required=True, metavar="VERB")
    train = verbs.add_parser("train", help="train on a COCO salient-instance json with S4Net's schedule and batches",
                             description="Resumes from OUT/checkpoints/last.pt; writes OUT/metrics.jsonl and "
                                         "OUT/model_final.pt.")
    train.add_argument("--annotations", type=Path, required=True, help="COCO salient-instance json")
    train.add_argument("--images", type=Path, required=True, help="folder the json's file_name entries are in")
    train.add_argument("--out", type=Path, required=True, help="output folder")
    train.add_argument("--backbone", default=defaults.backbone, choices=PEER_BACKBONES)
    train.add_argument("--size", type=positive_int, default=defaults.size, help="square input size (px)")
    train.add_argument("--detections", type=positive_int, default=defaults.detections, help="detections kept per image")
    train.add_argument("--iterations", type=positive_int, default=2600)
    train.add_argument("--batch-size", type=positive_int, default=8)
    train.add_argument("--lr", type=positive_float, default=0.02)
    train.add_argument("--lr-steps", type=positive_int, nargs="+", default=[2000, 2420])
    train.add_argument("--warmup", type=int, default=50)
    train.add_argument("--scale-jitter", type=positive_float, nargs=2, default=None, metavar=("LO", "HI"))
    train.add_argument("--grad-clip", type=positive_float, default=5.0)
    train.add_argument("--seed", type=int, default=0)
    add_cpu_bf16(train, default="auto")
    train.add_argument("--device", default="auto", help="auto, cpu or cuda[:k]")
    train.add_argument("--checkpoint-every", type=positive_int, default=200)
    train.add_argument("--log-every", type=positive_int, default=20, help="iterations between metrics.jsonl lines")
    train.add_argument("--workers", type=int, default=None,
                       help="data-loading processes per process (default: 0 on CPU, a share of the cores on CUDA)")
    train.add_argument("--sync-bn", action="store_true", help="under torchrun: BatchNorm over the global batch")
    train.add_argument("--compile", action="store_true", help="run the model through torch.compile")
    add_verbosity(train)
    train.set_defaults(handler=_peer_train)
    evaluate = verbs.add_parser("evaluate", help="mask mAP and images/s on a COCO salient-instance json")
    evaluate.add_argument("--checkpoint", type=Path, required=True, help="peer checkpoint (model_final.pt)")
    evaluate.add_argument("--annotations", type=Path, required=True, help="COCO salient-instance json (test set)")
    evaluate.add_argument("--images", type=Path, required=True, help="image folder of the json")
    evaluate.add_argument("--out", type=Path, required=True, help="metrics json to write")
    evaluate.add_argument("--batch-size", type=positive_int, default=4)
    evaluate.add_argument("--device", default="auto", help="auto, cpu or cuda[:k]")
    add_verbosity(evaluate)
    evaluate.set_defaults(handler=_peer_evaluate)


def add_commands(commands) -> None:
    """Add ``explain``, ``ablation-table`` and ``peer`` to the ``s4net`` sub-commands."""
    from s4net.config import MASKINGS

    explain = commands.add_parser(
        "explain",
        help="gradient maps |dL_seg/dH| of binary vs ternary RoIMasking (the paper's Fig. 6)",
        description=(
            "For the largest instance of each image, back-propagate its mask loss to the features entering "
            "RoIMasking and save |gradient| summed over channels as heat maps (box orange, ring blue)."
        ),
    )
    explain.add_argument("--checkpoint", type=Path, nargs="+", required=True, help="one or more checkpoints")
    explain.add_argument("--annotations", type=Path, required=True, help="COCO salient-instance json")
    explain.add_argument("--images", type=Path, required=True, help="image folder of the json")
    explain.add_argument("--out", type=Path, required=True, help="output folder of PNGs")
    explain.add_argument("--masking", nargs="+", choices=MASKINGS,
                         help="variants to apply (default: each checkpoint's own)")
    explain.add_argument("--limit", type=int, default=8, help="images to explain (default 8)")
    explain.add_argument("--device", default="auto")
    add_verbosity(explain)
    explain.set_defaults(handler=_explain)

    table = commands.add_parser(
        "ablation-table",
        help="mean ± std over seeds of each variant's test metrics, beside the paper's numbers",
        description="Reduce s4net evaluate's metrics of several variants (one file per seed) to one row per variant; "
                    "write JSON (and Markdown) with the paper's values and whether the mAP@0.5 ranking matches.",
    )
    table.add_argument("--study", required=True, help="name of the study (a key of --paper)")
    table.add_argument("--runs", nargs="+", required=True, metavar="VARIANT=METRICS_JSON",
                       help="one per trained seed; repeat a variant for each of its seeds")
    table.add_argument("--paper", type=Path, help="YAML: study -> variant -> metric -> the paper's value")
    table.add_argument("--peers", nargs="*", default=[], metavar="PEER=VARIANT",
                       help="variants that are another method (e.g. Mask R-CNN), each compared with an S4Net variant "
                            "and left out of the ranking")
    table.add_argument("--metrics", nargs="+", choices=METRICS, default=list(METRICS),
                       help="the metrics tabled (default: all); e.g. leave images_per_s out of runs that shared their "
                            "machine")
    table.add_argument("--out", type=Path, required=True, help="table JSON to write")
    table.add_argument("--markdown", type=Path, help="also write the Markdown table here")
    table.add_argument("--plot", type=Path, help="also draw the study as a PNG (alpha vs mAP, speed vs mAP, or bars)")
    add_verbosity(table)
    table.set_defaults(handler=_ablation_table)
    _add_peer(commands)
