"""Training of S4Net: SGD with step decays, seeded order, resumable checkpoints, on the engine (:mod:`s4net.engine`).

S4Net's part is its model, its batches (:class:`~s4net.data.training.SeededBatches`) and its
loss; the loop, the checkpoints, mixed precision, torchrun's ranks and preemption are the
engine's (:func:`s4net.engine.run_training`, whose docstring shows the output folder; the
final file is ``model_final.pt``).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from s4net.checkpoint import build_model, read_checkpoint, save_checkpoint
from s4net.config import S4NetConfig, json_ready
from s4net.engine import LoopSettings, Step, TrainingDiverged, run_training, step_factor

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Settings of one training run (the paper's: lr 0.004, 20k iterations, decay at 10k).

    Attributes:
        annotations / images: COCO salient-instance json and the image folder.
        out: output folder (its layout: :mod:`s4net.engine.loop`).
        iterations: total SGD iterations.
        batch_size: images per iteration, over all processes under torchrun (each takes its share).
        lr: base learning rate; ``lr_steps`` iterations at which it is multiplied by ``gamma``.
        warmup_iterations: linear warm-up from lr/100 (0: none, as the paper).
        checkpoint_every: iterations between snapshots (0: only the final one).
        keep_snapshots: how many periodic snapshots to keep, newest first (0: all).
        log_every: iterations between metrics lines.
        seed: seeds initialisation, sample order, flips and zooms.
        hflip: random horizontal flips (the paper's only augmentation).
        scale_jitter: (lo, hi) random zoom of each sample, cropped or padded back to
            the input size (None: none, as the paper).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda[:k]``.
        amp: mixed precision on CUDA (ignored on CPU).
        cpu_bf16: bfloat16 autocast on CPU (faster steps where the CPU has AVX512-BF16
            or AMX, see ``bench/train_step.py``; weights, optimizer state and losses stay float32).
        workers: data-loading processes (None: 0 on CPU, a share of the host's cores on CUDA).
        cache: keep resized samples in memory.
        deterministic: switch on torch's deterministic algorithms.
        grad_clip: clip the gradient norm to this (None: no clipping, as the paper).
        compile: run the model through ``torch.compile``.
        sync_bn: under torchrun, BatchNorm statistics over the global batch (for ``norm: bn``).
        model: the S4Net model config.
    """

    annotations: Path
    images: Path
    out: Path
    iterations: int = 20000
    batch_size: int = 2
    lr: float = 0.004
    lr_steps: tuple[int, ...] = (10000,)
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iterations: int = 0
    checkpoint_every: int = 1000
    keep_snapshots: int = 3
    log_every: int = 20
    seed: int = 0
    hflip: bool = True
    scale_jitter: tuple[float, float] | None = None
    device: str = "auto"
    amp: bool = True
    cpu_bf16: bool = False
    workers: int | None = None
    cache: bool = False
    deterministic: bool = False
    grad_clip: float | None = None
    compile: bool = False
    sync_bn: bool = False
    model: S4NetConfig = field(default_factory=S4NetConfig)

    def __post_init__(self) -> None:
        self.annotations, self.images, self.out = Path(self.annotations), Path(self.images), Path(self.out)
        self.lr_steps = tuple(int(s) for s in self.lr_steps)
        if self.scale_jitter is not None:
            lo, hi = (float(v) for v in self.scale_jitter)
            if not 0 < lo <= hi:
                raise ValueError(f"scale_jitter={self.scale_jitter} must be (lo, hi) with 0 < lo <= hi")
            self.scale_jitter = (lo, hi)
        if self.iterations < 1 or self.batch_size < 1:
            raise ValueError("iterations and batch_size must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr} must be > 0")
        if list(self.lr_steps) != sorted(self.lr_steps) or any(s < 1 for s in self.lr_steps):
            raise ValueError(f"lr_steps={self.lr_steps} must be increasing positive iterations")
        for name in ("checkpoint_every", "keep_snapshots", "warmup_iterations", "workers"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if self.log_every < 1:
            raise ValueError(f"log_every={self.log_every} must be >= 1")

    def resume_key(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues."""
        keep = ("iterations", "batch_size", "lr", "lr_steps", "gamma", "momentum", "weight_decay",
                "warmup_iterations", "seed", "hflip", "scale_jitter", "grad_clip")
        values = {k: getattr(self, k) for k in keep}  # not the device or precision: a run resumes on any
        values["model"] = self.model.to_dict()
        return json_ready(values)

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["model"] = self.model.to_dict()
        return json_ready({k: str(v) if isinstance(v, Path) else v for k, v in values.items()})


def learning_rate_factor(iteration: int, cfg: TrainConfig) -> float:
    """Multiplier of the base lr at an iteration: warm-up, then one ``gamma`` per passed step."""
    return step_factor(iteration, cfg.lr_steps, cfg.gamma, cfg.warmup_iterations)


def loop_settings(cfg: TrainConfig, progress: bool, desc: str = "train s4net") -> LoopSettings:
    """The engine's settings from a :class:`TrainConfig`."""
    return LoopSettings(
        out=cfg.out, final_name="model_final.pt", iterations=cfg.iterations, batch_size=cfg.batch_size, lr=cfg.lr,
        momentum=cfg.momentum, weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip, seed=cfg.seed,
        device=cfg.device, amp=cfg.amp, cpu_bf16=cfg.cpu_bf16, checkpoint_every=cfg.checkpoint_every,
        keep_snapshots=cfg.keep_snapshots, log_every=cfg.log_every, workers=cfg.workers,
        deterministic=cfg.deterministic, compile=cfg.compile, sync_bn=cfg.sync_bn, progress=progress, desc=desc,
    )


class S4NetTask:
    """S4Net on the engine: its model, its seeded batches of salient instances, its losses and checkpoints."""

    def __init__(self, cfg: TrainConfig) -> None:
        from s4net.data.coco import SalientInstanceDataset

        self.cfg = cfg
        self.source = SalientInstanceDataset(cfg.annotations, cfg.images)
        self.size = cfg.model.image_size  # the side samples are resized to

    def build_model(self) -> torch.nn.Module:
        return build_model(self.cfg.model)

    def dataset(self) -> torch.utils.data.Dataset:
        from s4net.data.training import TrainingSet

        return TrainingSet(self.source, self.size, cache=self.cfg.cache)

    def batches(self, start: int) -> torch.utils.data.Sampler:
        from s4net.data.training import SeededBatches

        cfg = self.cfg
        return SeededBatches(len(self.source), cfg.batch_size, cfg.seed, start, cfg.iterations, cfg.hflip,
                             cfg.scale_jitter)

    def collate(self, items: list[Any]) -> Any:
        from s4net.data.training import collate

        return collate(items)

    def lr_factor(self, iteration: int) -> float:
        return learning_rate_factor(iteration, self.cfg)

    def losses(self, model: torch.nn.Module, batch: Any, step: Step) -> dict[str, torch.Tensor]:
        from s4net.data.training import device_images

        images, targets = batch
        images = device_images(images, step.device)
        targets = [{k: v.to(step.device, non_blocking=True) for k, v in t.items()} for t in targets]
        return model(images, targets)

    def resume_key(self) -> dict[str, Any]:
        return self.cfg.resume_key()

    def record(self) -> dict[str, Any]:
        return self.cfg.to_dict()

    def save(self, path: Path, model: torch.nn.Module, **state: Any) -> None:
        save_checkpoint(path, model, **state)

    def read(self, path: Path, map_location: torch.device | str) -> dict[str, Any]:
        return read_checkpoint(path, map_location=map_location)

    def finish(self, model: torch.nn.Module, device: torch.device) -> dict[str, Any]:
        return {}


def train(cfg: TrainConfig, progress: bool = True) -> Path:
    """Train (or resume) and return the path of ``model_final.pt`` (run by every rank under torchrun)."""
    return run_training(S4NetTask(cfg), loop_settings(cfg, progress))


__all__ = ["S4NetTask", "TrainConfig", "TrainingDiverged", "learning_rate_factor", "loop_settings", "train"]
