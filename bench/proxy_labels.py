"""Throughput and memory of ``wsss proxy-labels`` against S4Net inference alone, in one run (JSON out).

Each contender runs in its own process on the same images, so its peak RSS is its
own (``wait4``). Images come from a synthetic world's ImageNet-like subset, hard
linked into a scratch folder as many times as needed to reach each count.

    python -m bench.proxy_labels --world demo_out/data --checkpoint demo_out/s4net/model_final.pt \\
        --out bench/results/proxy_labels_cpu.json
    # the load test: proxy labels alone over 500 and 5000 images (memory must stay flat)
    python -m bench.proxy_labels --world demo_out/data --checkpoint demo_out/s4net/model_final.pt \
        --modes proxy --counts 500 5000 --out bench/results/proxy_labels_load_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import emit


def make_images(world: Path, count: int, scratch: Path) -> tuple[Path, Path]:
    """An ImageNet-layout root with ``count`` images (hard links to the world's, cycled) and its keyword CSV."""
    from pipeline.datasets.imagenet import KeywordEntry, read_keyword_table, write_keyword_table

    source = world / "imagenet"
    entries = read_keyword_table(source / "keywords.csv", source)
    root = scratch / f"images_{count}"
    out = []
    for n in range(count):
        entry = entries[n % len(entries)]
        relative = Path(entry.image)
        name = relative.with_name(f"{relative.stem}_{n:05d}{relative.suffix}")
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(source / relative, target)
        out.append(KeywordEntry(name.as_posix(), entry.keywords))
    write_keyword_table(root / "keywords.csv", out)
    return root, root / "keywords.csv"


def child(args: argparse.Namespace) -> int:
    """One contender in this process; prints {"seconds", "images"}."""
    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.child == "inference":
        from pipeline.datasets.imagenet import ImageNetSubset
        from s4net.checkpoint import load_checkpoint
        from s4net.inference import run_detector

        model = load_checkpoint(args.checkpoint).for_inference()
        subset = ImageNetSubset(args.images, args.keywords)
        items = ((e.image, subset.image_path(i)) for i, e in enumerate(subset.entries))
        count = sum(1 for _ in run_detector(model, items, batch_size=8, progress=False, features=True))
    else:
        from pipeline.cues.crf import CRFConfig
        from pipeline.proxy_labels.runner import ProxyLabelSettings, run_proxy_labels

        settings = ProxyLabelSettings(cue="instances", crf=CRFConfig() if args.child == "proxy+crf" else None)
        summary = run_proxy_labels(args.checkpoint, args.images, args.scratch_out, keywords=args.keywords,
                                   settings=settings, classifier_path=args.classifier, workers=args.workers,
                                   batch_size=8, progress=False)
        count = summary["written"]
    print(json.dumps({"seconds": time.perf_counter() - start, "images": count}))
    return 0


def run_child(mode: str, images: Path, keywords: Path, args: argparse.Namespace, scratch: Path) -> dict:
    out = Path(tempfile.mkdtemp(dir=scratch, prefix=f"{mode}-"))
    # the child runs as `python -m bench.proxy_labels` from the repository root: its paths are made absolute
    paths = [str(Path(p).resolve()) for p in (images, keywords, args.checkpoint, args.classifier, out)]
    command = [sys.executable, "-m", "bench.proxy_labels", "--child", mode, "--images", paths[0], "--keywords",
               paths[1], "--checkpoint", paths[2], "--classifier", paths[3], "--scratch-out", paths[4],
               "--threads", str(args.threads), "--workers", str(args.workers)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"{mode} failed (status {status})")
    result = json.loads(stdout.strip().splitlines()[-1])
    return {"mode": mode, "images": result["images"], "seconds": result["seconds"],
            "images_per_s": result["images"] / result["seconds"], "peak_rss_mib": usage.ru_maxrss / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, help="synthetic world (holds imagenet/)")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--classifier", type=Path,
                        help="instance classifier (default: trained once into the scratch folder)")
    parser.add_argument("--counts", type=int, nargs=2, default=[100, 1000], help="small and large image counts")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="processes for CRF and writing")
    parser.add_argument("--modes", nargs="+", choices=("inference", "proxy", "proxy+crf"),
                        default=["inference", "proxy", "proxy+crf"],
                        help="contenders on the large count (proxy also runs the small)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", choices=("inference", "proxy", "proxy+crf"), help=argparse.SUPPRESS)
    parser.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--keywords", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scratch-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.world is None:
        parser.error("--world is required")

    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        scratch = Path(tmp)
        small, large = args.counts
        small_root, small_keywords = make_images(args.world, small, scratch)
        large_root, large_keywords = make_images(args.world, large, scratch)
        if args.classifier is None:
            from pipeline.cues.instance_classifier import ClassifierConfig, fit_instance_classifier
            from pipeline.cues.keyword_assignment import AssignmentConfig
            from pipeline.datasets.imagenet import ImageNetSubset
            from s4net.checkpoint import load_checkpoint

            args.classifier = scratch / "instance_classifier.pt"
            fit_instance_classifier(load_checkpoint(args.checkpoint).for_inference(),
                                    ImageNetSubset(args.world / "imagenet", args.world / "imagenet" / "keywords.csv"),
                                    AssignmentConfig(), ClassifierConfig(), args.classifier, progress=False)
        runs = {mode: run_child(mode, large_root, large_keywords, args, scratch) for mode in args.modes}
        proxy_small = run_child("proxy", small_root, small_keywords, args, scratch) if "proxy" in args.modes else None
    report = {
        "benchmark": "wsss proxy-labels throughput and memory",
        "device": platform.processor() or platform.machine(),
        "threads": args.threads,
        "crf_workers": args.workers,
        "checkpoint": str(args.checkpoint),
        "note": "each mode in its own process (model loading included in its seconds); the same images for all; "
                "inference alone = S4Net with mask-pooled features over the images, nothing written",
        "runs": list(runs.values()) + ([proxy_small] if proxy_small else []),
    }
    if "inference" in runs:
        for mode, key in (("proxy", "proxy_overhead_vs_inference"),
                          ("proxy+crf", "proxy_with_crf_overhead_vs_inference")):
            if mode in runs:
                report[key] = runs["inference"]["images_per_s"] / runs[mode]["images_per_s"] - 1.0
    if proxy_small:
        report["peak_rss_mib"] = {f"{small} images": proxy_small["peak_rss_mib"],
                                  f"{large} images": runs["proxy"]["peak_rss_mib"]}
        report["peak_rss_ratio_large_over_small"] = runs["proxy"]["peak_rss_mib"] / proxy_small["peak_rss_mib"]
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
