"""Images/s of every trainer on 1 and on N processes (torchrun), and the scaling efficiency, in one run.

Each trainer runs its real command line (decoding, batching, the engine's loop) under
``torchrun --standalone --nproc-per-node P --no-python`` for P = 1 and P = N, with the same
global batch; images/s come from its own ``metrics.jsonl`` (the first ``--warmup`` lines left out).
Efficiency is ``ips(N) / (N * ips(1))``: 1.0 is perfect scaling. On CPU the processes use gloo and
share the machine's cores (each gets ``cores / P`` threads), so the figure says what splitting a CPU
costs, not what a GPU node gains; with ``--device cuda`` each rank takes its own GPU and NCCL.

    python -m bench.ddp_scaling --out bench/results/ddp_scaling_cpu.json
    python -m bench.ddp_scaling --device cuda --processes 8 --size 320 --batch-size 16 --iterations 60
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

import torch

from bench.report import emit

TRAINERS = ("s4net", "segmenter", "cam", "peer")


def trainer_command(name: str, world: Path, out: Path, args: argparse.Namespace) -> list[str]:
    """The trainer's CLI at the bench's size (global batch ``args.batch_size``)."""
    bindir = Path(sys.executable).parent
    salient, imagenet = world / "salient", world / "imagenet"
    common = ["--iterations", str(args.iterations), "--batch-size", str(args.batch_size), "--device", args.device,
              "--log-every", "1", "--checkpoint-every", str(args.iterations), "--seed", "0", "-q"]
    if name == "s4net":
        return [str(bindir / "s4net"), "train", "--annotations", str(salient / "train.json"), "--images",
                str(salient / "images"), "--out", str(out), "--backbone", args.backbone, "--norm", "bn", "--size",
                str(args.size), "--lr", "0.004", "--cache", *common]
    if name == "segmenter":
        return [str(bindir / "wsss"), "train-segmenter", "--images", str(imagenet), "--labels",
                str(imagenet / "masks"), "--out", str(out), "--encoder", args.backbone, "--crop", str(args.size),
                *common]
    if name == "cam":
        return [str(bindir / "wsss"), "train-cam", "--images", str(imagenet), "--out", str(out), "--backbone",
                args.backbone, "--size", str(args.size), *common]
    return [str(bindir / "s4net"), "peer", "train", "--annotations", str(salient / "train.json"), "--images",
            str(salient / "images"), "--out", str(out), "--backbone", args.backbone, "--size", str(args.size),
            "--warmup", "0", *common]


def images_per_s(out: Path, warmup: int) -> float:
    """Mean images/s over the metrics lines after the first ``warmup`` (time-weighted: images over seconds)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][warmup:]
    if not rows:
        raise RuntimeError(f"{out}: no metrics line after the {warmup} warm-up lines; raise --iterations")
    return len(rows) / sum(1.0 / row["images_per_s"] for row in rows)


def run_trainer(name: str, processes: int, world: Path, scratch: Path, args: argparse.Namespace) -> dict:
    out = scratch / f"{name}_{processes}"
    threads = max(1, (os.cpu_count() or 1) // processes) if args.device == "cpu" else 1
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node", str(processes),
               "--no-python", *trainer_command(name, world, out, args)]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{name} on {processes} processes failed: {result.stderr[-2000:]}")
    return {"processes": processes, "threads_per_process": threads,
            "images_per_s": round(images_per_s(out, args.warmup), 3), "wall_s": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, default=None, help="a synthetic world (default: a tiny one, generated)")
    parser.add_argument("--trainers", nargs="+", choices=TRAINERS, default=list(TRAINERS))
    parser.add_argument("--processes", type=int, default=2, help="N (compared with 1)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=64, help="input size / crop (px)")
    parser.add_argument("--batch-size", type=int, default=4, help="global batch, the same on 1 and N processes")
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3, help="metrics lines left out at the start")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.batch_size % args.processes:
        parser.error(f"--batch-size {args.batch_size} must be a multiple of --processes {args.processes}")
    with tempfile.TemporaryDirectory(prefix="ddp_scaling_") as scratch_name:
        scratch = Path(scratch_name)
        world = args.world
        if world is None:
            from pipeline.datasets.synthetic.world import generate_world

            world = scratch / "world"
            generate_world(world, seed=0, scale="tiny", workers=1, progress=False)
        rows = []
        for name in args.trainers:
            one = run_trainer(name, 1, world, scratch, args)
            many = run_trainer(name, args.processes, world, scratch, args)
            rows.append({"trainer": name, "one": one, "many": many,
                         "speedup": round(many["images_per_s"] / one["images_per_s"], 3),
                         "efficiency": round(many["images_per_s"] / (args.processes * one["images_per_s"]), 3)})
    report = {
        "bench": "ddp_scaling", "device": args.device, "backend": "nccl" if args.device == "cuda" else "gloo",
        "processes": args.processes, "global_batch": args.batch_size, "size": args.size, "backbone": args.backbone,
        "iterations": args.iterations, "warmup_lines": args.warmup, "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "gpus": torch.cuda.device_count() if args.device == "cuda" else 0, "trainers": rows,
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
