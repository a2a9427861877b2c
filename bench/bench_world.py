"""Throughput of the synthetic-world generator: images per second with 1 worker
(the baseline) and with N workers, measured in the same run; JSON on stdout.

    python -m bench.bench_world [--scale tiny|small] [--workers 2] [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pipeline.datasets.synthetic.world import SCALES, generate_world


def _images(scale: str) -> int:
    sizes = SCALES[scale]
    return sum(sizes.salient) + 20 * sizes.imagenet_per_class + sizes.voc_train + sizes.voc_val


def _time_once(scale: str, workers: int, seed: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate_world(Path(tmp) / "w", seed=seed, scale=scale, workers=workers, progress=False)
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=("tiny", "small"), default="tiny")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    images = _images(args.scale)
    runs: dict[str, list[float]] = {"workers_1": [], f"workers_{args.workers}": []}
    for repeat in range(args.repeats):  # interleaved, so drift hits both alike
        runs["workers_1"].append(_time_once(args.scale, 1, repeat))
        runs[f"workers_{args.workers}"].append(_time_once(args.scale, args.workers, repeat))
    medians = {name: statistics.median(times) for name, times in runs.items()}
    result = {
        "benchmark": "synthetic_world_generation",
        "scale": args.scale,
        "images": images,
        "repeats": args.repeats,
        "seconds_median": {k: round(v, 3) for k, v in medians.items()},
        "images_per_second": {k: round(images / v, 1) for k, v in medians.items()},
        "speedup_vs_workers_1": round(medians["workers_1"] / medians[f"workers_{args.workers}"], 2),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
