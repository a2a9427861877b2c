"""``wsss train-segmenter``: DeepLab on proxy (or ground-truth) labels; SGD with poly lr, on the engine.

The segmenter's part is its model, its batches (:class:`~pipeline.segmenter.data.SeededSegBatches`)
and its loss (cross entropy over the labelled pixels of the global batch); the loop, checkpoints,
mixed precision, torchrun's ranks and preemption are :func:`s4net.engine.run_training`'s. Output
folder: ``train_config.json``, ``metrics.jsonl``, ``checkpoints/last.pt`` (and snapshots),
``model_final.pt``. A killed run resumes from ``last.pt`` and sees the same batches as an
uninterrupted one; so does a run on another number of processes.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pipeline.classes import IGNORE_INDEX
from pipeline.segmenter.data import SeededSegBatches, SegmentationPairs, find_pairs
from pipeline.segmenter.deterministic import masked_cross_entropy_sum
from pipeline.segmenter.model import SegmenterConfig, build_segmenter, read_segmenter, save_segmenter
from s4net.engine import LoopSettings, Step, TrainingDiverged, global_mean, poly_factor, run_training
from s4net.engine.sample_dropout import per_sample_dropout
from s4net.models.backbones import normalise

SegmenterDiverged = TrainingDiverged  # the name of release 0.1.0


@dataclass
class SegTrainConfig:
    """Settings of one segmenter training run.

    Attributes:
        images / labels: roots paired by :func:`pipeline.segmenter.data.find_pairs`; ``ids``
            optionally restricts to a list of label paths.
        out: output folder.
        model: which DeepLab; ``encoder_weights`` a local ImageNet state dict, ``"package"`` for
            ``efficientnet_lite0``'s packaged weights (None: from scratch).
        iterations, batch_size, lr, momentum, weight_decay, power: SGD with the poly schedule (``batch_size``
            is the global batch, split over torchrun's processes)
            ``lr * (1 - it / iterations) ** power``.
        crop: square training crop in pixels; ``scale`` the random zoom range; ``hflip`` flips.
        seed: initialisation, order and augmentation.
        device: ``auto``, ``cpu`` or ``cuda[:k]``; ``amp``: float16 autocast on CUDA; ``cpu_bf16``: bfloat16
            autocast on CPU (faster steps where oneDNN has bfloat16: AVX512-BF16 or AMX CPUs).
        checkpoint_every / log_every: iterations between ``last.pt`` saves / metrics lines.
        workers: data-loading processes per rank (None: 0 on CPU, a share of the host's cores on CUDA).
        compile: run the model through ``torch.compile``.
        deterministic: torch's deterministic algorithms (for GPU runs; CPU runs are repeatable anyway), with the
            deterministic twins of DeepLab's upsampling, pooling and loss
            (:mod:`pipeline.segmenter.deterministic`) and deterministic cuBLAS.
        sync_bn: under torchrun, BatchNorm statistics over the global batch.
        keep_snapshots: periodic snapshots ``checkpoints/iter_N.pt`` kept, newest first (0: all).
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
    cpu_bf16: bool = False
    checkpoint_every: int = 200
    log_every: int = 20
    workers: int | None = None
    deterministic: bool = False
    sync_bn: bool = False
    keep_snapshots: int = 2
    compile: bool = False

    def __post_init__(self) -> None:
        counts = {"iterations": self.iterations, "batch_size": self.batch_size, "crop": self.crop,
                  "log_every": self.log_every}
        for name, value in counts.items():
            if value < 1:
                raise ValueError(f"SegTrainConfig.{name}={value} must be >= 1")
        if self.lr <= 0 or self.checkpoint_every < 0 or (self.workers or 0) < 0 or self.keep_snapshots < 0:
            raise ValueError("SegTrainConfig needs lr > 0, checkpoint_every >= 0, workers >= 0 and keep_snapshots >= 0")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"SegTrainConfig.scale={self.scale} must be 0 < lo <= hi")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))

    def resume_key(self) -> dict[str, Any]:
        """What must match for a checkpoint to be resumed (not the device, the worker or process count)."""
        key = self.to_dict()
        for name in ("out", "device", "workers", "checkpoint_every", "log_every", "deterministic", "sync_bn",
                     "keep_snapshots", "compile"):
            key.pop(name)
        return key


class SegmenterTask:
    """DeepLab on the engine: seeded crops of (image, label) pairs, cross entropy over the labelled pixels."""

    def __init__(self, cfg: SegTrainConfig) -> None:
        self.cfg = cfg
        self.pairs = find_pairs(cfg.images, cfg.labels, cfg.ids)
        self.dropouts: list = []

    def build_model(self) -> torch.nn.Module:
        model = build_segmenter(self.cfg.model, self.cfg.encoder_weights, deterministic=self.cfg.deterministic)
        self.dropouts = per_sample_dropout(model)  # the same masks on any number of processes
        return model

    def dataset(self) -> torch.utils.data.Dataset:
        return SegmentationPairs(self.pairs, self.cfg.crop)

    def batches(self, start: int) -> torch.utils.data.Sampler:
        cfg = self.cfg
        return SeededSegBatches(len(self.pairs), cfg.batch_size, cfg.seed, start, cfg.iterations, cfg.scale, cfg.hflip)

    def collate(self, items: list[Any]) -> Any:
        """uint8 images Tensor[B, 3, crop, crop] and uint8 labels Tensor[B, crop, crop] (255: ignore), as the
        loader workers ship them (a quarter and an eighth of float32 and int64); :meth:`losses` converts them."""
        return torch.utils.data.default_collate(items)

    def lr_factor(self, iteration: int) -> float:
        return poly_factor(iteration, self.cfg.iterations, self.cfg.power)

    def losses(self, model: torch.nn.Module, batch: Any, step: Step) -> dict[str, torch.Tensor]:
        images, labels = batch_on_device(batch, step.device)
        for dropout in self.dropouts:
            dropout.draw_for(step.seed, step.samples)
        logits = model(normalise(images, self.cfg.model.encoder))  # model may be wrapped (DDP, compile)
        total = segmentation_loss(logits, labels, self.cfg.deterministic)
        # a crop with no labelled pixel teaches nothing (its loss is 0, not 0/0)
        return {"loss": global_mean(total, (labels != IGNORE_INDEX).sum())}

    def resume_key(self) -> dict[str, Any]:
        return self.cfg.resume_key()

    def record(self) -> dict[str, Any]:
        return {**self.cfg.to_dict(), "pairs": len(self.pairs)}

    def save(self, path: Path, model: torch.nn.Module, **state: Any) -> None:
        save_segmenter(path, model, self.cfg.model, **state)

    def read(self, path: Path, map_location: torch.device | str) -> dict[str, Any]:
        return read_segmenter(path, map_location=map_location)

    def finish(self, model: torch.nn.Module, device: torch.device) -> dict[str, Any]:
        return {}


# uint8 value -> float in [0, 1], computed once on the CPU as the loader workers used to compute each pixel, so
# a batch converted on any device holds the very numbers they shipped (a device's own division may round otherwise)
UNIT_FLOATS = torch.arange(256, dtype=torch.float32).div_(255.0)


@functools.lru_cache(maxsize=8)
def _unit_floats_on(device: torch.device) -> torch.Tensor:
    return UNIT_FLOATS.to(device)


def batch_on_device(batch: tuple[torch.Tensor, torch.Tensor],
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The loader's uint8 batch on ``device``: float32 images Tensor[B, 3, H, W] in [0, 1] and int64 labels
    Tensor[B, H, W] (255: ignore), the numbers the workers used to compute and ship themselves."""
    images, labels = (t.to(device, non_blocking=True) for t in batch)
    if images.dtype != torch.uint8:
        raise ValueError(f"segmenter batches hold uint8 images, got {images.dtype}")
    return _unit_floats_on(torch.device(device))[images.long()], labels.long()


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
    """The cross entropy of Tensor[B, C, H, W] logits against Tensor[B, H, W] labels, summed over the labelled
    pixels (255 ignored), in float32. ``deterministic``: without ``nll_loss2d``, which has no deterministic CUDA
    kernel (:func:`~pipeline.segmenter.deterministic.masked_cross_entropy_sum`, the same sum within rounding)."""
    if deterministic:
        return masked_cross_entropy_sum(logits.float(), labels, IGNORE_INDEX)
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")


def train_segmenter(cfg: SegTrainConfig, progress: bool = True) -> Path:
    """Train (or resume) and return the path of ``model_final.pt`` (the caller's RNG state is left alone)."""
    settings = LoopSettings(
        out=cfg.out, final_name="model_final.pt", iterations=cfg.iterations, batch_size=cfg.batch_size, lr=cfg.lr,
        momentum=cfg.momentum, weight_decay=cfg.weight_decay, seed=cfg.seed, device=cfg.device, amp=cfg.amp,
        cpu_bf16=cfg.cpu_bf16, checkpoint_every=cfg.checkpoint_every, keep_snapshots=cfg.keep_snapshots,
        log_every=cfg.log_every, workers=cfg.workers, deterministic=cfg.deterministic, compile=cfg.compile,
        sync_bn=cfg.sync_bn, progress=progress, desc="train segmenter",
    )
    return run_training(SegmenterTask(cfg), settings)
