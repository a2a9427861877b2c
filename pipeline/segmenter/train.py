"""``wsss train-segmenter``: DeepLab on proxy (or ground-truth) labels; SGD with poly lr, resumable.

Output folder: ``train_config.json``, ``metrics.jsonl``, ``checkpoints/last.pt`` (full
state, atomic), ``model_final.pt``. A killed run resumes from ``last.pt`` and sees
the same batches as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline.classes import IGNORE_INDEX
from pipeline.segmenter.data import SeededSegBatches, SegmentationPairs, find_pairs
from pipeline.segmenter.model import SegmenterConfig, build_segmenter, read_segmenter, save_segmenter
from s4net.engine import (
    MetricsLog,
    autocast_context,
    deterministic_algorithms,
    newest_readable_state,
    optimizer_step,
    parameter_groups,
    poly_factor,
    resolve_device,
    restore_training,
)
from s4net.io.atomic import write_json
from s4net.models.backbones import normalise_imagenet

log = logging.getLogger(__name__)


class SegmenterDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class SegTrainConfig:
    """Settings of one segmenter training run.

    Attributes:
        images / labels: roots paired by :func:`pipeline.segmenter.data.find_pairs`; ``ids``
            optionally restricts to a list of label paths.
        out: output folder.
        model: which DeepLab; ``encoder_weights`` a local ImageNet state dict (None: from scratch).
        iterations, batch_size, lr, momentum, weight_decay, power: SGD with the poly schedule
            ``lr * (1 - it / iterations) ** power``.
        crop: square training crop in pixels; ``scale`` the random zoom range; ``hflip`` flips.
        seed: initialisation, order and augmentation.
        device: ``auto``, ``cpu`` or ``cuda[:k]``; ``amp``: float16 autocast on CUDA.
        checkpoint_every / log_every: iterations between ``last.pt`` saves / metrics lines.
        workers: data-loading processes.
        deterministic: torch's deterministic algorithms (for GPU runs; CPU runs are repeatable anyway).
    """

    images: Path
    labels: Path
    out: Path
    ids: Path | None = None
    model: SegmenterConfig = SegmenterConfig()
    encoder_weights: Path | None = None
    iterations: int = 20000
    batch_size: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    power: float = 0.9
    crop: int = 321
    scale: tuple[float, float] = (0.5, 1.5)
    hflip: bool = True
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    checkpoint_every: int = 200
    log_every: int = 20
    workers: int = 0
    deterministic: bool = False

    def __post_init__(self) -> None:
        counts = {"iterations": self.iterations, "batch_size": self.batch_size, "crop": self.crop,
                  "log_every": self.log_every}
        for name, value in counts.items():
            if value < 1:
                raise ValueError(f"SegTrainConfig.{name}={value} must be >= 1")
        if self.lr <= 0 or self.checkpoint_every < 0 or self.workers < 0:
            raise ValueError("SegTrainConfig needs lr > 0, checkpoint_every >= 0 and workers >= 0")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"SegTrainConfig.scale={self.scale} must be 0 < lo <= hi")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))

    def resume_key(self) -> dict[str, Any]:
        """What must match for a checkpoint to be resumed (not the device or worker count)."""
        key = self.to_dict()
        for name in ("out", "device", "workers", "checkpoint_every", "log_every", "deterministic"):
            key.pop(name)
        return key


def train_segmenter(cfg: SegTrainConfig, progress: bool = True) -> Path:
    """Train (or resume) and return the path of ``model_final.pt`` (the caller's RNG state is left alone)."""
    with torch.random.fork_rng(devices=[]), deterministic_algorithms(cfg.deterministic):
        return _train(cfg, progress)


def _train(cfg: SegTrainConfig, progress: bool) -> Path:
    out = Path(cfg.out)
    checkpoints = out / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    final_path, last_path, metrics_path = out / "model_final.pt", checkpoints / "last.pt", out / "metrics.jsonl"
    device = resolve_device(cfg.device)
    pairs = find_pairs(cfg.images, cfg.labels, cfg.ids)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = build_segmenter(cfg.model, cfg.encoder_weights).to(device)
    optimizer = torch.optim.SGD(parameter_groups(model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start = 0
    state, state_path = newest_readable_state([last_path], lambda p: read_segmenter(p, map_location=device))
    if state is not None:
        start = restore_training(state, cfg.resume_key(), state_path, model, optimizer, scaler, metrics_path)
    elif metrics_path.exists():
        metrics_path.unlink()
    write_json(out / "train_config.json", {**cfg.to_dict(), "pairs": len(pairs)}, indent=2)
    if start >= cfg.iterations and final_path.exists():
        return final_path
    sampler = SeededSegBatches(len(pairs), cfg.batch_size, cfg.seed, start, cfg.iterations, cfg.scale, cfg.hflip)
    loader = torch.utils.data.DataLoader(SegmentationPairs(pairs, cfg.crop), batch_sampler=sampler,
                                         num_workers=cfg.workers, persistent_workers=cfg.workers > 0,
                                         pin_memory=device.type == "cuda")

    def snapshot(iteration: int) -> None:
        save_segmenter(last_path, model, cfg.model, optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
                       iteration=iteration, train=cfg.resume_key())

    model.train()
    bar = tqdm(total=cfg.iterations, initial=start, disable=not progress, desc="train segmenter", unit="it",
               dynamic_ncols=True)
    metrics = metrics_path.open("a", encoding="utf-8")
    log_metrics = MetricsLog(metrics, cfg.batch_size, cfg.log_every, cfg.iterations)
    try:
        for iteration, (images, labels) in enumerate(loader, start=start):
            # dropout draws: a function of the iteration, so resumes match
            torch.manual_seed(cfg.seed * 1_000_003 + iteration)
            factor = poly_factor(iteration, cfg.iterations, cfg.power)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * factor
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with autocast_context(device, use_amp, False):
                logits = model(normalise_imagenet(images))
            loss = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)
            if not torch.isfinite(loss):
                if bool((labels == IGNORE_INDEX).all()):
                    loss = logits.sum() * 0.0  # a crop with no labelled pixel teaches nothing
                else:
                    kept = last_path if last_path.exists() else "none yet"
                    raise SegmenterDiverged(f"loss is not finite at iteration {iteration}; last good checkpoint: "
                                            f"{kept}")
            optimizer_step(loss, model, optimizer, scaler)
            done = iteration + 1
            bar.update(1)
            means = log_metrics.add(done, cfg.lr * factor, {"loss": float(loss.detach())})
            if means is not None:
                bar.set_postfix(loss=f"{means['loss']:.3f}")
            if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.iterations:
                snapshot(done)
    finally:
        bar.close()
        metrics.close()
    save_segmenter(final_path, model, cfg.model, iteration=cfg.iterations, train=cfg.resume_key())
    return final_path
