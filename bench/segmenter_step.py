"""Does data loading starve the segmenter? Its real training loop against the model step alone, in one run.

The real loop is ``train_segmenter`` on a world's ImageNet-like images and masks (decoding,
zoom, crop, flip, batching included); its images/s come from its own metrics lines, the
first window (warm-up) left out. The model step alone is the same model, optimiser and loss
on random tensors of the same shape, timed before and after the real loop (mean of the two,
so a drift of the machine hits both). Prints (and optionally writes) JSON.

    python -m bench.segmenter_step --world demo_out/data --out bench/results/segmenter_step_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.memory import peak_rss_mib
from bench.report import emit


def model_step_images_per_s(encoder: str, batch: int, crop: int, steps: int, warmup: int = 3) -> float:
    """Images/s of forward + loss + backward + SGD step on random tensors (no data loading at all)."""
    from pipeline.segmenter.model import SegmenterConfig, build_segmenter
    from s4net.engine import parameter_groups
    from s4net.models.backbones import normalise_imagenet

    torch.manual_seed(0)
    model = build_segmenter(SegmenterConfig(encoder=encoder)).train()
    optimizer = torch.optim.SGD(parameter_groups(model, 1e-4), lr=0.01, momentum=0.9)
    images = torch.rand(batch, 3, crop, crop)
    labels = torch.randint(0, 21, (batch, crop, crop))
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        loss = F.cross_entropy(model(normalise_imagenet(images)), labels, ignore_index=255)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - start)


def real_loop_images_per_s(world: Path, encoder: str, batch: int, crop: int, steps: int, workers: int,
                           scratch: Path) -> tuple[float, list[float]]:
    """Images/s of train_segmenter's own loop, from its metrics windows after the first."""
    from pipeline.segmenter.model import SegmenterConfig
    from pipeline.segmenter.train import SegTrainConfig, train_segmenter

    window = max(steps // 4, 1)
    config = SegTrainConfig(images=world / "imagenet", labels=world / "imagenet" / "masks", out=scratch,
                            model=SegmenterConfig(encoder=encoder), iterations=window + steps, batch_size=batch,
                            crop=crop, seed=0, device="cpu", checkpoint_every=0, log_every=window, workers=workers)
    train_segmenter(config, progress=False)
    windows = [json.loads(line)["images_per_s"] for line in (scratch / "metrics.jsonl").read_text().splitlines()]
    steady = windows[1:]
    return sum(steady) / len(steady), windows


def memory_work(kind: str, world: Path, encoder: str, batch: int, crop: int, threads: int) -> None:
    """A few iterations of the model step alone (``model_step``) or of the real loop (``real_loop``),
    for peak memory."""
    torch.set_num_threads(threads)
    if kind == "model_step":
        model_step_images_per_s(encoder, batch, crop, steps=5, warmup=0)
        return
    with tempfile.TemporaryDirectory(prefix="bench-seg-mem-") as tmp:
        real_loop_images_per_s(world, encoder, batch, crop, 8, 0, Path(tmp))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True, help="synthetic world (holds imagenet/ with masks/)")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40, help="timed iterations of each contender")
    parser.add_argument("--workers", type=int, default=0, help="data-loading processes of the real loop")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    before = model_step_images_per_s(args.encoder, args.batch_size, args.crop, args.steps)
    with tempfile.TemporaryDirectory(prefix="bench-seg-") as tmp:
        real, windows = real_loop_images_per_s(args.world, args.encoder, args.batch_size, args.crop, args.steps,
                                               args.workers, Path(tmp))
    after = model_step_images_per_s(args.encoder, args.batch_size, args.crop, args.steps)
    alone = (before + after) / 2
    emit({
        "benchmark": "segmenter training: real loop against the model step alone",
        "device": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": args.threads,
        "encoder": args.encoder, "batch": args.batch_size, "crop": args.crop, "loader_workers": args.workers,
        "model_step_images_per_s": {"before": before, "after": after, "mean": alone},
        "real_loop_images_per_s": real,
        "real_loop_windows_images_per_s": windows,
        "real_over_model_step": real / alone,
        "target_at_least": 0.9,
        "meets_target": real / alone >= 0.9,
        "peak_rss_mib": {kind: peak_rss_mib(memory_work, kind, args.world, args.encoder, args.batch_size, args.crop,
                                            args.threads) for kind in ("model_step", "real_loop")},
        "memory_note": "a fresh process running a few iterations of each (the real loop with 0 loader workers)",
    }, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
