"""The dense CRF's cost knobs (``--crf-scale``, ``--crf-iterations``) against the proxy-label mIoU they cost (JSON out).

S4Net and the ``instances`` cue run once over a synthetic world's ImageNet-like subset
(the images have ground-truth class masks); then every knob setting refines the same
cue outputs, and its labels are scored against the masks as ``wsss score`` does (one
confusion matrix; 255 in a label counts as a miss). Cost is the CRF's CPU time per
image (``time.process_time``: pydensecrf is single-threaded, so it does not move with
the machine's other load), with the wall time beside it; the settings are taken in turns
over ``--repeats`` rounds. Without ``--checkpoint-note`` the JSON cannot say what the
checkpoint is: a random-weight one gives meaningless mIoU.

    python -m bench.crf_knobs --world demo_out/data --checkpoint demo_out/s4net/model_final.pt \\
        --checkpoint-note "demo S4Net" --out bench/results/crf_knobs_cpu.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import emit


def cue_outputs(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per image: the RGB, the cue's labels, probabilities and label ids, the ground truth; and run facts."""
    import torch

    from pipeline.cues import make_cue
    from pipeline.cues.instance_classifier import ClassifierConfig, fit_instance_classifier, load_classifier
    from pipeline.cues.keyword_assignment import AssignmentConfig
    from pipeline.cues.label_painting import ProxyConfig
    from pipeline.datasets.imagenet import ImageNetSubset
    from pipeline.datasets.voc import read_voc_label
    from s4net.checkpoint import load_checkpoint
    from s4net.inference import run_detector

    torch.set_num_threads(args.threads)
    imagenet = args.world / "imagenet"
    subset = ImageNetSubset(imagenet, imagenet / "keywords.csv")
    assignment = AssignmentConfig()
    model = load_checkpoint(args.checkpoint).for_inference()
    model.min_score = assignment.score_threshold
    if args.classifier is not None:
        classifier, _ = load_classifier(args.classifier)
    else:
        classifier, _ = fit_instance_classifier(model, subset, assignment, ClassifierConfig(),
                                                args.scratch / "instance_classifier.pt", progress=False)
    cue = make_cue("instances", assignment, ProxyConfig(), classifier)
    indices = list(range(len(subset)))[: args.images] if args.images else list(range(len(subset)))
    items = [(subset.entries[i].image, subset.image_path(i)) for i in indices]
    keywords = {subset.entries[i].image: subset.entries[i].keywords for i in indices}
    outputs = []
    for det in run_detector(model, items, batch_size=8, progress=False, features=True):
        result = cue(det, keywords[det.key])
        truth = read_voc_label((imagenet / "masks" / det.key).with_suffix(".png"))
        outputs.append({"image": det.image, "labels": result.labels, "probabilities": result.probabilities,
                        "label_ids": result.label_ids, "truth": truth})
    facts = {"images": len(outputs), "images_with_probabilities": sum(o["probabilities"] is not None for o in outputs),
             "image_size": list(outputs[0]["image"].shape[:2]) if outputs else None}
    return outputs, facts


def score(outputs: list[dict[str, Any]], labels: list[np.ndarray]) -> dict[str, float]:
    from pipeline.classes import NUM_CLASSES
    from pipeline.segmenter.metrics import confusion_matrix, summarise

    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES + 1), dtype=np.int64)
    for output, label in zip(outputs, labels, strict=True):
        matrix += confusion_matrix(label, output["truth"])
    summary = summarise(matrix)
    return {key: summary[key] for key in ("mIoU", "mIoU_labelled", "coverage", "pixel_accuracy")}


def refine_all(outputs: list[dict[str, Any]], config) -> tuple[list[np.ndarray], float, float]:
    """Every image's refined labels, the CPU seconds and the wall seconds they took."""
    from pipeline.cues.crf import refine_labels

    cpu, wall = time.process_time(), time.perf_counter()
    labels = [o["labels"] if o["probabilities"] is None
              else refine_labels(o["image"], o["labels"], o["probabilities"], o["label_ids"], config)
              for o in outputs]
    return labels, time.process_time() - cpu, time.perf_counter() - wall


def photo_timing(photos: Path, configs: dict[str, Any], count: int) -> dict[str, Any]:
    """CRF seconds per real ImageNet photo (a two-label unary from a centred disc: the cost depends on size alone)."""
    from pipeline.cues.crf import crf_inference
    from s4net.io.images import load_rgb

    images = [load_rgb(p) for p in sorted(photos.rglob("*.JPEG"))[:count]]
    result: dict[str, Any] = {"images": len(images),
                              "mean_pixels": float(np.mean([i.shape[0] * i.shape[1] for i in images]))}
    for name, config in configs.items():
        cpu = time.process_time()
        for image in images:
            h, w = image.shape[:2]
            yy, xx = np.mgrid[:h, :w]
            fg = np.clip(1.2 - np.hypot((yy - h / 2) / h, (xx - w / 2) / w) * 3, 0.01, 0.99).astype(np.float32)
            crf_inference(image, np.stack([1 - fg, fg]), config)
        result[name] = {"cpu_ms_per_image": 1000 * (time.process_time() - cpu) / max(len(images), 1)}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True, help="synthetic world (holds imagenet/ with masks/)")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--checkpoint-note", default="", help="what the checkpoint is (recorded in the JSON)")
    parser.add_argument("--classifier", type=Path, default=None, help="instance classifier (default: fitted here)")
    parser.add_argument("--images", type=int, default=0, help="first N images of the subset (0: all)")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.75, 0.5, 0.25])
    parser.add_argument("--iterations", type=int, nargs="+", default=[10, 5, 3, 1])
    parser.add_argument("--repeats", type=int, default=3, help="timing rounds (settings in turns)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for S4Net")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import tempfile

    from pipeline.cues.crf import CRFConfig

    with tempfile.TemporaryDirectory(prefix="bench-crf-") as tmp:
        args.scratch = Path(tmp)
        outputs, facts = cue_outputs(args)
    configs = {f"scale {s:g}, {n} iterations": CRFConfig(scale=s, iterations=n)
               for s in args.scales for n in args.iterations}
    reference = CRFConfig()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in configs}
    scores: dict[str, dict[str, float]] = {}
    for _ in range(args.repeats):
        for name, config in configs.items():
            labels, cpu, wall = refine_all(outputs, config)
            times[name].append((cpu, wall))
            scores.setdefault(name, score(outputs, labels))
    no_crf = score(outputs, [o["labels"] for o in outputs])
    default_name = f"scale {reference.scale:g}, {reference.iterations} iterations"
    per_image = max(facts["images"], 1)
    rows = []
    for name, config in configs.items():
        cpu = statistics.median(t[0] for t in times[name])
        wall = statistics.median(t[1] for t in times[name])
        rows.append({"setting": name, "scale": config.scale, "iterations": config.iterations,
                     "cpu_ms_per_image": 1000 * cpu / per_image, "wall_ms_per_image": 1000 * wall / per_image,
                     **scores[name]})
    base = next((r for r in rows if r["setting"] == default_name), None)
    for row in rows:
        row["mIoU_minus_no_crf"] = row["mIoU"] - no_crf["mIoU"]
        if base is not None:
            row["mIoU_minus_default_crf"] = row["mIoU"] - base["mIoU"]
            row["cpu_time_over_default_crf"] = row["cpu_ms_per_image"] / base["cpu_ms_per_image"]
    report = {
        "benchmark": "dense CRF cost knobs against proxy-label mIoU",
        "processor": platform.processor() or platform.machine(),
        "load_average_at_end": os.getloadavg(),
        "world": str(args.world),
        "checkpoint": str(args.checkpoint),
        "checkpoint_note": args.checkpoint_note,
        "cue": "instances (score threshold 0.5, S4Net.min_score at it)",
        "note": "the same cue outputs refined by each setting; mIoU against the world's ImageNet-subset class masks, "
                "255 counted as a miss (wsss score); cpu_ms_per_image is the CRF's CPU time per image (all images, "
                "those without CRF unary included), median over the rounds",
        **facts,
        "default": default_name,
        "no_crf": no_crf,
        "settings": rows,
    }
    photos = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "imagenet_voc_classes"
    if photos.is_dir():
        report["real_photo_cpu_cost"] = photo_timing(photos, {
            name: configs[name] for name in configs
            if configs[name].iterations in (max(args.iterations), min(args.iterations))}, 20)
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
