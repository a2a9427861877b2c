"""Training-step time of S4Net in float32 against bfloat16 autocast, in one run (and of its Mask R-CNN peer).

The demo's recipe by default (ResNet-18, 128x128, batch 8, the demo model config) on
random images with random boxes and masks; the precisions are timed in turns so that
drifts of the machine hit both alike. With ``--peer``, torchvision Mask R-CNN with the
same backbone, input size and batch (``s4net peer``, what the ablations' peer
rows train) is timed in the same turns. Prints (and optionally writes) JSON.

    python -m bench.train_step --threads 2 --peer --out bench/results/train_step_cpu.json
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
import torchvision
import yaml

from bench.memory import peak_rss_mib
from bench.report import emit
from bench.timing import interleaved
from s4net import S4NetConfig, __version__, build_model
from s4net.engine import resolve_precision

ROOT = Path(__file__).resolve().parents[1]


def random_batch(batch: int, size: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Images in [0, 1] with 1-3 rectangular instances each (boxes and their masks)."""
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


def contender(name: str, config: S4NetConfig, size: int, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]):
    """(model in train mode, its SGD, its inputs) of ``fp32``/``bf16`` (S4Net) or ``maskrcnn fp32``/``maskrcnn
    bf16``."""
    torch.manual_seed(0)
    if name.startswith("maskrcnn"):
        from s4net.reproduction.maskrcnn_peer import PeerConfig, build_maskrcnn, peer_targets

        model = build_maskrcnn(PeerConfig(config.backbone, size, config.detections_per_image)).train()
        inputs = (list(images), peer_targets(targets, torch.device("cpu")))
    else:
        model, inputs = build_model(config).train(), (images, targets)
    return model, torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9), inputs


def training_step(name: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, inputs: tuple) -> None:
    """Forward (bfloat16 autocast for the ``bf16`` contenders), backward and one SGD step."""
    cpu = torch.device("cpu")
    with resolve_precision(cpu, amp=False, cpu_bf16=name.endswith("bf16")).autocast(cpu):
        losses = model(*inputs)
    optimizer.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    optimizer.step()


def memory_work(name: str, config: S4NetConfig, size: int, batch: int, threads: int, steps: int = 3) -> None:
    """``steps`` training steps of one contender alone, for its peak memory."""
    torch.set_num_threads(threads)
    images, targets = random_batch(batch, size, torch.Generator().manual_seed(0))
    model, optimizer, inputs = contender(name, config, size, images, targets)
    for _ in range(steps):
        training_step(name, model, optimizer, inputs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-config", type=Path, default=ROOT / "workflows/configs/s4net_demo_model.yaml")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peer", action="store_true", help="also time the Mask R-CNN peer's training step")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    if not args.model_config.is_file():
        parser.error(f"{args.model_config}: model config not found")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    values = yaml.safe_load(args.model_config.read_text(encoding="utf-8")) or {}
    config = S4NetConfig.from_dict({**values, "image_size": args.size})
    images, targets = random_batch(args.batch, args.size, torch.Generator().manual_seed(0))
    device = torch.device("cpu")
    names = ["fp32", "bf16"] + (["maskrcnn fp32", "maskrcnn bf16"] if args.peer else [])
    contenders = {name: contender(name, config, args.size, images, targets) for name in names}

    times = interleaved({name: (lambda name=name: training_step(name, *contenders[name])) for name in names},
                        args.warmup, args.repeats, device)
    report = {
        "benchmark": "s4net training step, float32 vs bfloat16 autocast (CPU)",
        "s4net_version": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": platform.processor() or platform.machine(),
        "threads": args.threads,
        "model_config": str(args.model_config.relative_to(ROOT) if args.model_config.is_relative_to(ROOT)
                            else args.model_config),
        "input": [args.size, args.size],
        "batch": args.batch,
        "runs": [
            {"precision": name, **t, "images_per_s": args.batch / t["median_s"],
             **peak_rss_mib(memory_work, name, config, args.size, args.batch, args.threads)}
            for name, t in times.items()
        ],
        "memory_note": "peak_rss_mib: a fresh process running 3 training steps of that contender alone",
        "bf16_speedup": times["fp32"]["median_s"] / times["bf16"]["median_s"],
    }
    if args.peer:
        report["peer"] = f"torchvision Mask R-CNN {config.backbone}-FPN (s4net peer)"
        report["maskrcnn_step_over_s4net"] = {
            precision: times[f"maskrcnn {precision}"]["median_s"] / times[precision]["median_s"]
            for precision in ("fp32", "bf16")
        }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
