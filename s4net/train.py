"""Training of S4Net: SGD with step decays, seeded order, resumable checkpoints (the loop's parts: :mod:`s4net.engine`).

Layout of an output folder::

    out/
      train_config.json       the run's settings (a resumed run must match them)
      metrics.jsonl           one line per logged iteration
      checkpoints/last.pt     full state (model, optimizer, scaler, iteration), atomic
      checkpoints/iter_N.pt   periodic snapshots of the same (hard links where possible; the
                              newest ``keep_snapshots`` are kept)
      model_final.pt          model-only checkpoint written at the end
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from s4net.checkpoint import build_model, read_checkpoint, save_checkpoint
from s4net.config import S4NetConfig, json_ready
from s4net.data.coco import SalientInstanceDataset
from s4net.data.training import SeededBatches, TrainingSet, collate
from s4net.engine import (
    MetricsLog,
    autocast_context,
    deterministic_algorithms,
    newest_readable_state,
    optimizer_step,
    parameter_groups,
    prune_snapshots,
    resolve_device,
    restore_training,
    step_factor,
)
from s4net.io.atomic import write_json

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    """Settings of one training run (the paper's: lr 0.004, 20k iterations, decay at 10k).

    Attributes:
        annotations / images: COCO salient-instance json and the image folder.
        out: output folder (see the module docstring).
        iterations: total SGD iterations.
        batch_size: images per iteration.
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
        workers: data-loading processes.
        cache: keep resized samples in memory.
        deterministic: switch on torch's deterministic algorithms.
        grad_clip: clip the gradient norm to this (None: no clipping, as the paper).
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
    workers: int = 0
    cache: bool = False
    deterministic: bool = False
    grad_clip: float | None = None
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
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if self.log_every < 1:
            raise ValueError(f"log_every={self.log_every} must be >= 1")

    def resume_key(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues."""
        keep = ("iterations", "batch_size", "lr", "lr_steps", "gamma", "momentum", "weight_decay",
                "warmup_iterations", "seed", "hflip", "scale_jitter", "grad_clip")
        values = {k: getattr(self, k) for k in keep}
        if self.cpu_bf16:  # only when set, so runs from before the option still resume
            values["cpu_bf16"] = True
        values["model"] = self.model.to_dict()
        return json_ready(values)

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["model"] = self.model.to_dict()
        return json_ready({k: str(v) if isinstance(v, Path) else v for k, v in values.items()})


def learning_rate_factor(iteration: int, cfg: TrainConfig) -> float:
    """Multiplier of the base lr at an iteration: warm-up, then one ``gamma`` per passed step."""
    return step_factor(iteration, cfg.lr_steps, cfg.gamma, cfg.warmup_iterations)


def train(cfg: TrainConfig, progress: bool = True) -> Path:
    """Train (or resume) and return the path of ``model_final.pt``."""
    with deterministic_algorithms(cfg.deterministic):
        return _train(cfg, progress)


def _train(cfg: TrainConfig, progress: bool) -> Path:
    out = cfg.out
    checkpoints = out / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    final_path = out / "model_final.pt"
    last_path = checkpoints / "last.pt"
    metrics_path = out / "metrics.jsonl"
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)

    model = build_model(cfg.model).to(device)
    optimizer = torch.optim.SGD(parameter_groups(model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start = 0
    snapshots = sorted(checkpoints.glob("iter_*.pt"), reverse=True)
    state, state_path = newest_readable_state([last_path, *snapshots],
                                              lambda p: read_checkpoint(p, map_location=device))
    if state is not None:
        start = restore_training(state, cfg.resume_key(), state_path, model, optimizer, scaler, metrics_path)
    elif metrics_path.exists():
        metrics_path.unlink()
    write_json(out / "train_config.json", cfg.to_dict())
    if start >= cfg.iterations and final_path.exists():
        log.info("%s already trained to %d iterations", out, cfg.iterations)
        return final_path

    source = SalientInstanceDataset(cfg.annotations, cfg.images)
    dataset = TrainingSet(source, cfg.model.image_size, cache=cfg.cache)
    sampler = SeededBatches(len(dataset), cfg.batch_size, cfg.seed, start, cfg.iterations, cfg.hflip, cfg.scale_jitter)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.workers,
        persistent_workers=cfg.workers > 0, pin_memory=device.type == "cuda",
    )

    def snapshot(iteration: int) -> None:
        state = {
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "iteration": iteration,
            "train": cfg.resume_key(),
        }
        save_checkpoint(last_path, model, **state)
        if cfg.checkpoint_every and iteration % cfg.checkpoint_every == 0 and iteration < cfg.iterations:
            target = checkpoints / f"iter_{iteration:07d}.pt"
            target.unlink(missing_ok=True)
            try:  # last.pt is replaced by rename, never rewritten, so a hard link stays this snapshot
                os.link(last_path, target)
            except OSError:
                save_checkpoint(target, model, **state)
            prune_snapshots(checkpoints, cfg.keep_snapshots)

    model.train()
    bar = tqdm(total=cfg.iterations, initial=start, disable=not progress, desc="train s4net", unit="it",
               dynamic_ncols=True)
    metrics = metrics_path.open("a", encoding="utf-8")
    log_metrics = MetricsLog(metrics, cfg.batch_size, cfg.log_every, cfg.iterations)
    try:
        for iteration, (images, targets) in enumerate(loader, start=start):
            factor = learning_rate_factor(iteration, cfg)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * factor
            images = images.to(device, non_blocking=True)
            targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
            with autocast_context(device, use_amp, cfg.cpu_bf16):
                losses = model(images, targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                parts = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
                kept = last_path if last_path.exists() else "none (no checkpoint was written yet)"
                raise TrainingDiverged(f"loss is not finite at iteration {iteration} ({parts}); last good checkpoint: "
                                       f"{kept}")
            optimizer_step(loss, model, optimizer, scaler, cfg.grad_clip)
            done = iteration + 1
            bar.update(1)
            means = log_metrics.add(done, cfg.lr * factor, {k: float(v.detach()) for k, v in losses.items()})
            if means is not None:
                bar.set_postfix({k.removeprefix("loss_"): f"{v:.3f}" for k, v in means.items()})
            if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.iterations:
                snapshot(done)
    finally:
        bar.close()
        metrics.close()
    save_checkpoint(final_path, model, iteration=cfg.iterations, train=cfg.resume_key())
    return final_path
