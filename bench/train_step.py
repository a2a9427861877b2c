"""Training-step time of S4Net by precision, in one run (and of its Mask R-CNN peer), on CPU or CUDA.

The demo's recipe by default (ResNet-18, 128x128, batch 8, the demo model config, float32
against bfloat16 autocast on the CPU) on random images with random boxes and masks; the
precisions are timed in turns so that drifts of the machine hit all alike. Each step is the
engine's: forward under :meth:`~s4net.engine.Precision.autocast`, then
:func:`~s4net.engine.optimizer_step` (a GradScaler runs for ``fp16``). With ``--peer``,
torchvision Mask R-CNN with the same backbone, input size and batch (``s4net peer``, what
the ablations' peer rows train) is timed in the same turns; with ``--channels-last``, S4Net in
channels-last memory format in each precision (as the engine trains it on CUDA and under CPU
bfloat16). Peak memory: on the CPU a fresh
process running 3 steps of each contender alone (``peak_rss_mib``); on CUDA 3 steps of each
contender alone after the timing, in this process (``peak_gpu_mib``, allocated by torch above
what was allocated before). Prints (and optionally writes) JSON.

    python -m bench.train_step --threads 2 --peer --channels-last --out bench/results/train_step_cpu.json
    python -m bench.train_step --device cuda --model-config workflows/configs/s4net_r50_model.yaml \\
        --size 320 --batch 16 --precisions fp32 bf16 fp16
"""

from __future__ import annotations

import argparse
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
import yaml

from bench.memory import peak_rss_mib
from bench.report import emit
from bench.timing import interleaved
from s4net import S4NetConfig, __version__, build_model
from s4net.engine import Precision, optimizer_step, resolve_precision

ROOT = Path(__file__).resolve().parents[1]
# the precisions a contender can be timed in: autocast dtype and whether a GradScaler runs (the engine's Precision)
PRECISIONS = {"fp32": Precision(None, False), "bf16": Precision(torch.bfloat16, False),
              "fp16": Precision(torch.float16, True)}


@dataclass
class Contender:
    """One model in one precision, ready to step: the model in train mode, its SGD and scaler, its inputs."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    precision: Precision
    inputs: tuple


def random_batch(batch: int, size: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Images in [0, 1] with 1-3 rectangular instances each (boxes and their masks), on the CPU."""
    images = torch.rand(batch, 3, size, size, generator=generator)
    targets = []
    for _ in range(batch):
        count = int(torch.randint(1, 4, (1,), generator=generator))
        xy = torch.rand(count, 2, generator=generator) * size * 0.6
        wh = size * (0.2 + torch.rand(count, 2, generator=generator) * 0.35)
        boxes = torch.cat([xy, (xy + wh).clamp(max=size)], 1).floor()
        masks = torch.zeros(count, size, size, dtype=torch.uint8)
        for k, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
            masks[k, y1:y2, x1:x2] = 1
        targets.append({"boxes": boxes, "masks": masks})
    return images, targets


CHANNELS_LAST = "channels-last"  # a contender name's suffix: S4Net's weights and input batch in that memory format


def contender(name: str, config: S4NetConfig, size: int, images: torch.Tensor,
              targets: list[dict[str, torch.Tensor]], device: torch.device) -> Contender:
    """``<precision>`` (S4Net), ``<precision> channels-last`` (S4Net as the engine trains it in channels-last
    memory format) or ``maskrcnn <precision>`` (its peer) on ``device``: ``bf16``, ``bf16 channels-last``..."""
    words = name.split()
    channels_last = words[-1] == CHANNELS_LAST
    precision = PRECISIONS[words[-2] if channels_last else words[-1]]
    torch.manual_seed(0)
    images = images.to(device)
    if name.startswith("maskrcnn"):
        from s4net.reproduction.maskrcnn_peer import PeerConfig, build_maskrcnn, peer_targets

        model = build_maskrcnn(PeerConfig(config.backbone, size, config.detections_per_image)).to(device).train()
        inputs: tuple = (list(images), peer_targets(targets, device))
    else:
        model = build_model(config).to(device).train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            model.channels_last = True
        inputs = (images, [{k: v.to(device) for k, v in t.items()} for t in targets])
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scaler)
    return Contender(model, optimizer, scaler, precision, inputs)


def training_step(run: Contender, device: torch.device) -> None:
    """Forward under the contender's autocast, then the engine's backward, (scaled) SGD step and scaler update."""
    with run.precision.autocast(device):
        losses = run.model(*run.inputs)
    optimizer_step(sum(losses.values()), run.model, run.optimizer, run.scaler)


def memory_work(name: str, config: S4NetConfig, size: int, batch: int, threads: int, steps: int = 3) -> None:
    """``steps`` CPU training steps of one contender alone, for its peak memory (run in a fresh process)."""
    torch.set_num_threads(threads)
    images, targets = random_batch(batch, size, torch.Generator().manual_seed(0))
    cpu = torch.device("cpu")
    run = contender(name, config, size, images, targets, cpu)
    for _ in range(steps):
        training_step(run, cpu)


def cuda_peak_mib(name: str, config: S4NetConfig, size: int, batch: int, device: torch.device,
                  steps: int = 3) -> dict[str, float]:
    """``{"peak_gpu_mib"}``: the most memory torch allocated on ``device`` during ``steps`` steps of one
    contender alone (model, optimizer state, activations and inputs), above what was allocated before."""
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    images, targets = random_batch(batch, size, torch.Generator().manual_seed(0))
    run = contender(name, config, size, images, targets, device)
    for _ in range(steps):
        training_step(run, device)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del run
    torch.cuda.empty_cache()
    return {"peak_gpu_mib": round((peak - before) / 2**20, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-config", type=Path, default=ROOT / "workflows/configs/s4net_demo_model.yaml")
    parser.add_argument("--backbone", help="override the model config's backbone")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:k]")
    parser.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), default=["fp32", "bf16"],
                        help="autocast dtypes to time (fp16 runs a GradScaler); default: fp32 bf16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peer", action="store_true", help="also time the Mask R-CNN peer's training step")
    parser.add_argument("--channels-last", action="store_true",
                        help="also time each precision with S4Net in channels-last memory format")
    parser.add_argument("--skip-memory", action="store_true", help="no peak-memory measurement (quicker)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    if not args.model_config.is_file():
        parser.error(f"{args.model_config}: model config not found")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available")
    precisions = list(dict.fromkeys(args.precisions))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    values = yaml.safe_load(args.model_config.read_text(encoding="utf-8")) or {}
    overrides = {"image_size": args.size, **({"backbone": args.backbone} if args.backbone else {})}
    config = S4NetConfig.from_dict({**values, **overrides})
    images, targets = random_batch(args.batch, args.size, torch.Generator().manual_seed(0))
    names = (precisions + ([f"{p} {CHANNELS_LAST}" for p in precisions] if args.channels_last else [])
             + ([f"maskrcnn {p}" for p in precisions] if args.peer else []))
    contenders = {name: contender(name, config, args.size, images, targets, device) for name in names}

    times = interleaved({name: (lambda name=name: training_step(contenders[name], device)) for name in names},
                        args.warmup, args.repeats, device)
    contenders.clear()  # free them before the memory runs
    memory: dict[str, dict[str, float]] = {}
    if not args.skip_memory:
        for name in names:
            memory[name] = (cuda_peak_mib(name, config, args.size, args.batch, device) if device.type == "cuda"
                            else peak_rss_mib(memory_work, name, config, args.size, args.batch, args.threads))
    report = {
        "benchmark": f"s4net training step by precision ({device.type})",
        "s4net_version": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else platform.processor() or platform.machine()),
        "threads": args.threads,
        "model_config": str(args.model_config.relative_to(ROOT) if args.model_config.is_relative_to(ROOT)
                            else args.model_config),
        "backbone": config.backbone,
        "input": [args.size, args.size],
        "batch": args.batch,
        "amp_resolves_to": resolve_precision(device, amp=True, cpu_bf16=False).name,
        "runs": [{"precision": name, **t, "images_per_s": args.batch / t["median_s"], **memory.get(name, {})}
                 for name, t in times.items()],
    }
    if memory:
        report["memory_note"] = ("peak_gpu_mib: allocated by torch during 3 training steps of that contender alone"
                                 if device.type == "cuda" else
                                 "peak_rss_mib: a fresh process running 3 training steps of that contender alone")
    if "fp32" in times:
        fp32 = times["fp32"]["median_s"]
        report["speedup_over_fp32"] = {p: fp32 / times[p]["median_s"] for p in precisions if p != "fp32"}
        if "bf16" in times:
            report["bf16_speedup"] = fp32 / times["bf16"]["median_s"]
    if args.channels_last:
        report["channels_last_speedup"] = {p: times[p]["median_s"] / times[f"{p} {CHANNELS_LAST}"]["median_s"]
                                           for p in precisions}
    if args.peer:
        report["peer"] = f"torchvision Mask R-CNN {config.backbone}-FPN (s4net peer)"
        report["maskrcnn_step_over_s4net"] = {p: times[f"maskrcnn {p}"]["median_s"] / times[p]["median_s"]
                                              for p in precisions}
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
