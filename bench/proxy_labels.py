"""Throughput, memory and device use of ``wsss proxy-labels`` against S4Net inference alone, in one run (JSON out).

Each contender runs in its own process on the same images, so its peak RSS is its
own (``wait4``). Images come from a synthetic world's ImageNet-like subset, hard
linked into a scratch folder as many times as needed to reach each count. Ratios are
against baselines measured in the same run:

* ``proxy_overhead_vs_inference``: S4Net inference alone (mask-pooled features, nothing
  written) against proxy labels (the cue, PNGs, manifest), both with S4Net's minimum
  score at the cue's score threshold, as ``wsss proxy-labels`` runs; also with the pool
  (``--workers``) and without it (all in one process);
* ``min_score_speedup``: proxy labels with the minimum score at the cue's threshold (the
  default) against the full branch (``--min-score 0``, what every proposal cost before);
* on CUDA, the device's utilisation sampled every 0.1 s through each run
  (``torch.cuda.utilization``, which needs ``pynvml``; reported missing otherwise);
* decoding throughput with threads against processes, and the bytes of the masks each
  image sends to the workers, packed against full planes.

    python -m bench.proxy_labels --world demo_out/data --checkpoint demo_out/s4net/model_final.pt \\
        --out bench/results/proxy_labels_cpu.json
    # the load test: proxy labels alone over 500 and 5000 images (memory must stay flat)
    python -m bench.proxy_labels --world demo_out/data --checkpoint demo_out/s4net/model_final.pt \\
        --modes proxy --counts 500 5000 --out bench/results/proxy_labels_load_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import emit

# contender name -> (what runs, workers, minimum score: "threshold" or "0", CRF)
CONTENDERS = {
    "inference": ("inference", 1, "threshold", False),
    "inference_full_branch": ("inference", 1, "0", False),
    "proxy": ("proxy", None, "threshold", False),
    "proxy_in_one_process": ("proxy", 1, "threshold", False),
    "proxy_full_branch": ("proxy", None, "0", False),
    "proxy+crf": ("proxy", None, "threshold", True),
}


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


class UtilisationSampler:
    """The CUDA device's utilisation (%), sampled every ``period`` s in a background thread while in a ``with``."""

    def __init__(self, device: str, period: float = 0.1) -> None:
        self.device, self.period = device, period
        self.samples: list[float] = []
        self.problem: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import torch

        while not self._stop.wait(self.period):
            try:
                self.samples.append(float(torch.cuda.utilization(torch.device(self.device))))
            except Exception as exc:  # noqa: BLE001 - pynvml missing or NVML refusing: reported, not fatal
                self.problem = f"{type(exc).__name__}: {exc}"
                return

    def __enter__(self) -> "UtilisationSampler":
        if self.device.startswith("cuda"):
            self._thread.start()
        else:
            self.problem = "not a CUDA device"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"mean_percent": None, "reason": self.problem or "no samples"}
        return {"mean_percent": statistics.fmean(self.samples), "median_percent": statistics.median(self.samples),
                "samples": len(self.samples)}


def child(args: argparse.Namespace) -> int:
    """One contender in this process; prints {"seconds", "images", "gpu_utilisation"}."""
    import torch

    torch.set_num_threads(args.threads)
    from pipeline.cues.keyword_assignment import AssignmentConfig
    from s4net.engine import resolve_device

    device = str(resolve_device(args.device))
    threshold = AssignmentConfig().score_threshold
    min_score = threshold if args.min_score == "threshold" else float(args.min_score)
    start = time.perf_counter()
    with UtilisationSampler(device) as sampler:
        if args.child == "inference":
            from pipeline.datasets.imagenet import ImageNetSubset
            from s4net.checkpoint import load_checkpoint
            from s4net.inference import run_detector

            model = load_checkpoint(args.checkpoint, map_location=device).for_inference()
            model.min_score = min_score
            subset = ImageNetSubset(args.images, args.keywords)
            items = ((e.image, subset.image_path(i)) for i, e in enumerate(subset.entries))
            count = sum(1 for _ in run_detector(model, items, batch_size=args.batch_size, device=device,
                                                progress=False, features=True))
        else:
            from pipeline.cues.crf import CRFConfig
            from pipeline.proxy_labels.runner import ProxyLabelSettings, run_proxy_labels

            settings = ProxyLabelSettings(cue="instances", crf=CRFConfig() if args.crf else None, min_score=min_score)
            summary = run_proxy_labels(args.checkpoint, args.images, args.scratch_out, keywords=args.keywords,
                                       settings=settings, classifier_path=args.classifier, workers=args.workers,
                                       batch_size=args.batch_size, device=device, progress=False)
            count = summary["written"]
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    print(json.dumps({"seconds": time.perf_counter() - start, "images": count, "device": device,
                      "gpu_utilisation": sampler.summary()}))
    return 0


def run_child(name: str, images: Path, keywords: Path, args: argparse.Namespace, scratch: Path) -> dict:
    kind, workers, min_score, crf = CONTENDERS[name]
    workers = args.workers if workers is None else workers
    out = Path(tempfile.mkdtemp(dir=scratch, prefix=f"{name}-"))
    # the child runs as `python -m bench.proxy_labels` from the repository root: its paths are made absolute
    paths = [str(Path(p).resolve()) for p in (images, keywords, args.checkpoint, args.classifier, out)]
    command = [sys.executable, "-m", "bench.proxy_labels", "--child", kind, "--images", paths[0], "--keywords",
               paths[1], "--checkpoint", paths[2], "--classifier", paths[3], "--scratch-out", paths[4],
               "--threads", str(args.threads), "--workers", str(workers), "--min-score", min_score,
               "--batch-size", str(args.batch_size), "--device", args.device, *(["--crf"] if crf else [])]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"{name} failed (status {status})")
    result = json.loads(stdout.strip().splitlines()[-1])
    return {"mode": name, "workers": workers, "min_score": min_score, "crf": crf, "images": result["images"],
            "seconds": result["seconds"], "images_per_s": result["images"] / result["seconds"],
            "peak_rss_mib": usage.ru_maxrss / 1024, "device": result["device"],
            "gpu_utilisation": result["gpu_utilisation"]}


def median_run(results: list[dict]) -> dict:
    """One contender's rounds as one row: the median round's figures, every round's images/s beside them."""
    ordered = sorted(results, key=lambda r: r["images_per_s"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    row["images_per_s_rounds"] = [r["images_per_s"] for r in results]
    return row


def _decode_rate(pool: Executor, files: list[Path]) -> float:
    from s4net.io.images import load_rgb

    start = time.perf_counter()
    count = sum(1 for _ in pool.map(load_rgb, files))
    return count / (time.perf_counter() - start)


def decode_throughput(files: list[Path], workers: int) -> dict[str, float]:
    """Images/s of :func:`s4net.io.images.load_rgb` over ``files`` in 1 and ``workers`` threads and processes."""
    rates = {}
    for kind, make in (("threads", ThreadPoolExecutor), ("processes", ProcessPoolExecutor)):
        for count in sorted({1, workers}):
            with make(max_workers=count) as pool:
                list(pool.map(abs, range(count)))  # workers started before the clock
                rates[f"{kind}_{count}"] = _decode_rate(pool, files)
    return rates


def mask_payload(args: argparse.Namespace, images: Path, keywords: Path, count: int) -> dict[str, Any]:
    """Mean bytes per image of the masks sent to the workers: packed, against the full float32 planes."""
    from pipeline.cues.keyword_assignment import AssignmentConfig
    from pipeline.cues.label_painting import ProxyConfig
    from pipeline.datasets.imagenet import ImageNetSubset
    from s4net.checkpoint import load_checkpoint
    from s4net.engine import resolve_device
    from s4net.inference import run_detector

    device = resolve_device(args.device)
    subset = ImageNetSubset(images, keywords)
    thresholds = (AssignmentConfig().mask_threshold, ProxyConfig().foreground, ProxyConfig().background)
    report: dict[str, Any] = {}
    for label, min_score in (("min_score_threshold", AssignmentConfig().score_threshold), ("full_branch", 0.0)):
        model = load_checkpoint(args.checkpoint, map_location=device).for_inference()
        model.min_score = min_score
        items = [(e.image, subset.image_path(i)) for i, e in enumerate(subset.entries[:count])]
        packed, full, instances, flips = 0, 0, 0, 0
        for det in run_detector(model, items, batch_size=args.batch_size, device=device, progress=False,
                                packed=True):
            packed += det.masks.nbytes
            full += len(det.masks.windows) * det.masks.shape[0] * det.masks.shape[1] * 4
            instances += len(det.masks.windows)
            values = det.masks.values
            halved = values.astype(np.float16).astype(np.float32)
            flips += sum(int(np.count_nonzero((values >= t) != (halved >= t))) for t in thresholds)
        report[label] = {"images": len(items), "instances_per_image": instances / len(items),
                         "packed_bytes_per_image": packed / len(items), "full_bytes_per_image": full / len(items),
                         "packed_over_full": packed / full if full else None,
                         "float16_threshold_flips": flips}
    report["note"] = ("packed: each mask's window of nonzero pixels, float32 (lossless). float16_threshold_flips: "
                      f"mask pixels whose side of the cue's thresholds {sorted(set(thresholds))} would change if "
                      "the values crossed as float16 (then labels would not be the serial run's)")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, help="synthetic world (holds imagenet/)")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--checkpoint-note", default="", help="what the checkpoint is (recorded in the JSON)")
    parser.add_argument("--classifier", type=Path,
                        help="instance classifier (default: trained once into the scratch folder)")
    parser.add_argument("--counts", type=int, nargs=2, default=[100, 1000], help="small and large image counts")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each contender")
    parser.add_argument("--workers", type=int, default=2, help="wsss proxy-labels --workers of the pooled runs")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1, help="rounds of the large-count contenders (median kept)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda[:k] or auto")
    parser.add_argument("--modes", nargs="+", choices=tuple(CONTENDERS), default=list(CONTENDERS),
                        help="contenders on the large count (proxy also runs the small)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", choices=("inference", "proxy"), help=argparse.SUPPRESS)
    parser.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--keywords", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scratch-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--min-score", default="threshold", help=argparse.SUPPRESS)
    parser.add_argument("--crf", action="store_true", help=argparse.SUPPRESS)
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
        rounds: dict[str, list[dict]] = {mode: [] for mode in args.modes}
        for _ in range(args.repeats):  # contenders in turns, so drifts of the machine's load hit all alike
            for mode in args.modes:
                rounds[mode].append(run_child(mode, large_root, large_keywords, args, scratch))
        runs = {mode: median_run(results) for mode, results in rounds.items()}
        proxy_small = run_child("proxy", small_root, small_keywords, args, scratch) if "proxy" in args.modes else None
        world_files = sorted((args.world / "imagenet" / "train").rglob("*.JPEG"))[:300]
        decode = {"world_images": decode_throughput(world_files, args.workers)}
        photos = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "imagenet_voc_classes"
        if photos.is_dir():
            decode["real_imagenet_photos"] = decode_throughput(sorted(photos.rglob("*.JPEG"))[:100], args.workers)
        payload = mask_payload(args, small_root, small_keywords, min(small, 100))
    report = {
        "benchmark": "wsss proxy-labels throughput, memory and device use",
        "device": runs[next(iter(runs))]["device"] if runs else args.device,
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "threads": args.threads,
        "workers": args.workers,
        "repeats": args.repeats,
        "batch_size": args.batch_size,
        "checkpoint": str(args.checkpoint),
        "checkpoint_note": args.checkpoint_note,
        "note": "each mode in its own process (model loading included in its seconds); the same images for all; "
                "inference = S4Net with mask-pooled features over the images, nothing written; each large-count "
                "contender run --repeats times in turns, the median round kept; min_score "
                "'threshold' = the cue's score threshold (the wsss proxy-labels default), '0' = the full branch",
        "runs": list(runs.values()) + ([proxy_small] if proxy_small else []),
        "decode_images_per_s": decode,
        "mask_payload": payload,
    }

    def ratio(numerator: str, denominator: str) -> float | None:
        if numerator in runs and denominator in runs:
            return runs[numerator]["images_per_s"] / runs[denominator]["images_per_s"]
        return None

    derived = {
        "proxy_overhead_vs_inference": ("inference", "proxy"),
        "proxy_in_one_process_overhead_vs_inference": ("inference", "proxy_in_one_process"),
        "proxy_full_branch_overhead_vs_inference_full_branch": ("inference_full_branch", "proxy_full_branch"),
        "proxy_with_crf_overhead_vs_inference": ("inference", "proxy+crf"),
    }
    for key, (base, mode) in derived.items():
        value = ratio(base, mode)
        report[key] = None if value is None else value - 1.0
    report["min_score_speedup"] = ratio("proxy", "proxy_full_branch")
    report["min_score_speedup_inference_alone"] = ratio("inference", "inference_full_branch")
    report["pool_speedup"] = ratio("proxy", "proxy_in_one_process")
    if proxy_small:
        report["peak_rss_mib"] = {f"{small} images": proxy_small["peak_rss_mib"],
                                  f"{large} images": runs["proxy"]["peak_rss_mib"]}
        report["peak_rss_ratio_large_over_small"] = runs["proxy"]["peak_rss_mib"] / proxy_small["peak_rss_mib"]
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
