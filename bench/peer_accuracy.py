"""S4Net against its Mask R-CNN peer at the same iteration budget: mask mAP, images/s and training time.

Both are trained on a synthetic world's salient set with the demo's recipe (the demo
model config, 128x128, batch 8, lr 0.02, warm-up 50, scale jitter 0.8-1.25, gradient
clipping 5, bfloat16 autocast where the CPU has it), ``--iterations`` long with the lr
steps at the demo's fractions of the schedule (77% and 93%); Mask R-CNN by
``s4net peer`` on the same seeded batches. Both are scored on the test split
by ``s4net evaluate``'s code, one after the other on the same machine. Runs resume from
their checkpoints (a finished run is not redone). Prints (and optionally writes) JSON.

    python -m bench.peer_accuracy --world demo_out/data --iterations 300 --work bench_out/peer \\
        --out bench/results/peer_accuracy_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench.report import emit

ROOT = Path(__file__).resolve().parents[1]

DEMO_STEPS = (2000 / 2600, 2420 / 2600)  # the demo schedule's lr steps, as fractions of its 2600 iterations


def schedule(iterations: int) -> list[str]:
    """The recipe's flags shared by both trainings."""
    steps = sorted({max(1, round(iterations * f)) for f in DEMO_STEPS})
    return ["--size", "128", "--iterations", str(iterations), "--batch-size", "8", "--lr", "0.02", "--lr-steps",
            *map(str, steps), "--warmup", str(min(50, iterations // 4)), "--scale-jitter", "0.8", "1.25",
            "--grad-clip", "5.0", "--cpu-bf16", "auto", "--seed", "0", "--device", "cpu", "--quiet"]


def timed_run(command: list[str], log: Path) -> float:
    """Run a command (its output to ``log``); its wall seconds. A failure stops the benchmark, naming the log."""
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    if code != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed (exit {code}); see {log}")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True,
                        help="a synthetic world (wsss demo-data), e.g. demo_out/data")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--work", type=Path, default=ROOT / "bench_out" / "peer", help="training folders and logs")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    salient = args.world / "salient"
    if not (salient / "train.json").is_file():
        parser.error(f"{salient / 'train.json'}: not found (generate a world with wsss demo-data)")
    bin_dir = Path(sys.executable).parent
    args.work.mkdir(parents=True, exist_ok=True)
    data = ["--annotations", str(salient / "train.json"), "--images", str(salient / "images")]
    test = ["--annotations", str(salient / "test.json"), "--images", str(salient / "images"), "--device", "cpu",
            "--quiet"]
    runs = {}
    for name, train, evaluate in (
        ("s4net", [str(bin_dir / "s4net"), "train", "--model-config",
                   str(ROOT / "workflows/configs/s4net_demo_model.yaml"), "--cache", "--checkpoint-every", "100"],
         [str(bin_dir / "s4net"), "evaluate"]),
        ("maskrcnn", [str(bin_dir / "s4net"), "peer", "train", "--backbone", "resnet18", "--checkpoint-every", "20"],
         [str(bin_dir / "s4net"), "peer", "evaluate"]),
    ):
        folder = args.work / f"{name}-{args.iterations}"
        seconds = timed_run([*train, *data, "--out", str(folder), *schedule(args.iterations)],
                            args.work / f"{name}_train.log")
        metrics_path = folder / "test_metrics.json"
        timed_run([*evaluate, "--checkpoint", str(folder / "model_final.pt"), *test, "--out", str(metrics_path)],
                  args.work / f"{name}_evaluate.log")
        metrics = json.loads(metrics_path.read_text())
        lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        rates = [line["images_per_s"] for line in lines]
        runs[name] = {
            **{k: metrics[k] for k in ("mAP50", "mAP70", "mAP50_occluded", "mAP70_occluded", "images_per_s")},
            "train_images_per_s_median": sorted(rates)[len(rates) // 2],
            "train_wall_s_this_call": seconds,  # small when the run was already finished
            "final_loss": lines[-1]["loss"],
        }
    report = {
        "benchmark": "S4Net vs torchvision Mask R-CNN, same data, backbone, input size, batches and schedule (CPU)",
        "world": str(args.world),
        "iterations": args.iterations,
        "backbone": "resnet18",
        "device": platform.processor() or platform.machine(),
        "runs": runs,
        "s4net_minus_maskrcnn_points": {k: 100 * (runs["s4net"][k] - runs["maskrcnn"][k])
                                        for k in ("mAP50", "mAP70", "mAP50_occluded", "mAP70_occluded")},
        "inference_speedup": runs["s4net"]["images_per_s"] / runs["maskrcnn"]["images_per_s"],
        "training_speedup": runs["s4net"]["train_images_per_s_median"] / runs["maskrcnn"]["train_images_per_s_median"],
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
