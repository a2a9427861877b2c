"""Does data loading starve the segmenter? Its real training loop against the model step alone, in one run.

The real loop is ``train_segmenter`` on a world's ImageNet-like images and masks (decoding,
zoom, crop, flip, batching included); its images/s come from its own metrics lines, the
first window (warm-up) left out. The model step alone is the same model, optimiser, loss and
precision on random tensors of the same shape, timed before and after the real loop (mean of
the two, so a drift of the machine hits both). On CUDA, ``--amp`` runs both in the precision
``train_segmenter`` picks there (:func:`s4net.engine.resolve_precision`: bfloat16 where the GPU
supports it, else float16 with a GradScaler); the CPU computes in float32 either way. Peak
memory: on the CPU a fresh process running a few iterations of each (``peak_rss_mib``); on
CUDA what torch allocated during the timed runs themselves (``peak_gpu_mib``). Prints (and
optionally writes) JSON.

    python -m bench.segmenter_step --world demo_out/data --out bench/results/segmenter_step_cpu.json
    python -m bench.segmenter_step --world demo_out/data --device cuda --amp --arch deeplabv3 \\
        --encoder resnet101 --batch-size 16 --crop 320 --workers 8
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from bench.memory import peak_rss_mib
from bench.report import emit
from pipeline.segmenter.config import ARCHITECTURES


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_step_images_per_s(arch: str, encoder: str, batch: int, crop: int, steps: int, warmup: int = 3,
                            device: torch.device | str = "cpu", amp: bool = False) -> float:
    """Images/s of forward + loss + backward + SGD step on random tensors (no data loading at all)."""
    from pipeline.segmenter.model import SegmenterConfig, build_segmenter
    from s4net.engine import optimizer_step, parameter_groups, resolve_precision
    from s4net.models.backbones import normalise

    device = torch.device(device)
    precision = resolve_precision(device, amp, cpu_bf16=False)
    torch.manual_seed(0)
    model = build_segmenter(SegmenterConfig(arch=arch, encoder=encoder)).to(device).train()
    optimizer = torch.optim.SGD(parameter_groups(model, 1e-4), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scaler)
    images = torch.rand(batch, 3, crop, crop, device=device)
    labels = torch.randint(0, 21, (batch, crop, crop), device=device)
    start = time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            _synchronize(device)
            start = time.perf_counter()
        with precision.autocast(device):
            loss = F.cross_entropy(model(normalise(images, encoder)), labels, ignore_index=255)
        optimizer_step(loss, model, optimizer, scaler)
    _synchronize(device)
    return steps * batch / (time.perf_counter() - start)


def real_loop_images_per_s(world: Path, arch: str, encoder: str, batch: int, crop: int, steps: int, workers: int,
                           scratch: Path, device: str = "cpu", amp: bool = False) -> tuple[float, list[float]]:
    """Images/s of train_segmenter's own loop, from its metrics windows after the first."""
    from pipeline.segmenter.model import SegmenterConfig
    from pipeline.segmenter.train import SegTrainConfig, train_segmenter

    window = max(steps // 4, 1)
    config = SegTrainConfig(images=world / "imagenet", labels=world / "imagenet" / "masks", out=scratch,
                            model=SegmenterConfig(arch=arch, encoder=encoder), iterations=window + steps,
                            batch_size=batch, crop=crop, seed=0, device=device, amp=amp, checkpoint_every=0,
                            log_every=window, workers=workers)
    train_segmenter(config, progress=False)
    windows = [json.loads(line)["images_per_s"] for line in (scratch / "metrics.jsonl").read_text().splitlines()]
    steady = windows[1:]
    return sum(steady) / len(steady), windows


@contextlib.contextmanager
def cuda_peak(device: torch.device, into: dict[str, float], key: str) -> Iterator[None]:
    """Record in ``into[key]`` the most memory torch allocated on ``device`` inside the block, above what it held
    before (MiB); a no-op off CUDA."""
    if device.type != "cuda":
        yield
        return
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    yield
    torch.cuda.synchronize(device)
    into[key] = round((torch.cuda.max_memory_allocated(device) - before) / 2**20, 1)


def memory_work(kind: str, world: Path, arch: str, encoder: str, batch: int, crop: int, threads: int) -> None:
    """A few CPU iterations of the model step alone (``model_step``) or of the real loop (``real_loop``),
    for peak memory."""
    torch.set_num_threads(threads)
    if kind == "model_step":
        model_step_images_per_s(arch, encoder, batch, crop, steps=5, warmup=0)
        return
    with tempfile.TemporaryDirectory(prefix="bench-seg-mem-") as tmp:
        real_loop_images_per_s(world, arch, encoder, batch, crop, 8, 0, Path(tmp))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True, help="synthetic world (holds imagenet/ with masks/)")
    parser.add_argument("--arch", choices=ARCHITECTURES, default="deeplabv3plus")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40, help="timed iterations of each contender")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations before each model-step run")
    parser.add_argument("--workers", type=int, default=0, help="data-loading processes of the real loop")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:k]")
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision on CUDA, as train_segmenter runs by default (the CPU stays float32)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-memory", action="store_true", help="no peak-memory measurement (quicker)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available")
    torch.set_num_threads(args.threads)
    from s4net.engine import resolve_precision

    shape = (args.arch, args.encoder, args.batch_size, args.crop)
    gpu_peaks: dict[str, float] = {}
    before = model_step_images_per_s(*shape, args.steps, args.warmup, device=device, amp=args.amp)
    with tempfile.TemporaryDirectory(prefix="bench-seg-") as tmp, cuda_peak(device, gpu_peaks, "real_loop"):
        real, windows = real_loop_images_per_s(args.world, *shape, args.steps, args.workers, Path(tmp),
                                               device=args.device, amp=args.amp)
    with cuda_peak(device, gpu_peaks, "model_step"):
        after = model_step_images_per_s(*shape, args.steps, args.warmup, device=device, amp=args.amp)
    alone = (before + after) / 2
    report = {
        "benchmark": "segmenter training: real loop against the model step alone",
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else platform.processor() or platform.machine()),
        "torch": torch.__version__,
        "threads": args.threads,
        "arch": args.arch, "encoder": args.encoder, "batch": args.batch_size, "crop": args.crop,
        "loader_workers": args.workers,
        "precision": resolve_precision(device, args.amp, cpu_bf16=False).name,
        "model_step_images_per_s": {"before": before, "after": after, "mean": alone},
        "real_loop_images_per_s": real,
        "real_loop_windows_images_per_s": windows,
        "real_over_model_step": real / alone,
        "target_at_least": 0.9,
        "meets_target": real / alone >= 0.9,
    }
    if device.type == "cuda":
        report["peak_gpu_mib"] = gpu_peaks
        report["memory_note"] = "peak_gpu_mib: allocated by torch during the timed real loop and model step"
    elif not args.skip_memory:
        report["peak_rss_mib"] = {kind: peak_rss_mib(memory_work, kind, args.world, *shape, args.threads)
                                  for kind in ("model_step", "real_loop")}
        report["memory_note"] = "a fresh process running a few iterations of each (the real loop with 0 loader workers)"
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
