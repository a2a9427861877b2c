"""The training loop every trainer runs: S4Net, the segmenter, the CAM classifier and the Mask R-CNN peer.

A trainer is a :class:`TrainingTask` (its model, its data, its loss and its files) on top of
:func:`run_training`, which owns everything else:

* seeded global batches split over torchrun's ranks (:mod:`~s4net.engine.distributed`), the model
  wrapped in DistributedDataParallel, BatchNorm optionally synchronised over the ranks;
* the learning-rate schedule (the task's factor of the base lr), SGD with momentum and weight decay
  on conv/linear weights only, gradient clipping;
* mixed precision (:func:`resolve_precision`);
* the divergence check: a loss that is not finite on any rank stops every rank with
  :class:`TrainingDiverged` (one line naming the iteration and the loss; the CLIs exit 3). The
  losses stay on the device between sync points (each logged iteration, each checkpoint, the last
  step), where they are read back in one exchange, so no step waits for the host; weights spoilt
  by a non-finite step are never checkpointed;
* checkpoints: ``checkpoints/last.pt`` every ``checkpoint_every`` iterations and hard-linked
  snapshots ``iter_N.pt`` (the newest ``keep_snapshots`` kept), written atomically by rank 0 only,
  from a host copy, in the background (:mod:`~s4net.engine.checkpoint_writer`);
* cuDNN autotuning outside deterministic runs, channels-last weights on CUDA, ``torch.compile`` on request;
  a damaged ``last.pt`` falls back to the newest readable snapshot; resuming is exact (the batches
  are a function of seed and iteration, the state is complete);
* preemption: SIGTERM or SIGUSR1 finishes the step (with several ranks: up to the next sync point),
  saves and raises :class:`Preempted` (exit 75);
* ``metrics.jsonl`` and the progress bar, on rank 0.

Output folder::

    out/
      train_config.json       the run's settings (a resumed run must match its resume key)
      metrics.jsonl           one line per logged iteration (losses are means over the global batch)
      checkpoints/last.pt     full state: model, optimizer, scaler, iteration, resume key
      checkpoints/iter_N.pt   snapshots of the same
      <final name>            the trained model, written at the end
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

import torch
from torch import nn
from tqdm import tqdm

from s4net.engine.checkpoint_writer import CheckpointWriter, HostModel, host_copy
from s4net.engine.devices import cudnn_autotuning, deterministic_algorithms, resolve_device, usable_cores
from s4net.engine.distributed import (
    RankShare,
    World,
    all_ranks_sum,
    barrier,
    broadcast_object,
    join_world,
    leave_world,
    rank_device,
    world_from_env,
)
from s4net.engine.metrics_log import MetricsLog
from s4net.engine.optimization import optimizer_step, parameter_groups
from s4net.engine.preemption import Preempted, StopRequest, stop_on_signals
from s4net.engine.resume import newest_readable_state, prune_snapshots, restore_training
from s4net.engine.sync_batchnorm import convert_batchnorm
from s4net.errors import TrainingStopped
from s4net.io.atomic import write_json

log = logging.getLogger(__name__)

class TrainingDiverged(TrainingStopped, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept (the CLIs exit 3)."""

    exit_status = 3


def precision_name(dtype: torch.dtype | None) -> str:
    """``float32`` for None (no autocast), else the autocast dtype's name (``bfloat16``, ``float16``)."""
    return {None: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype]


@dataclass(frozen=True)
class Precision:
    """How a step computes: autocast to ``dtype`` (None: float32 throughout), and whether a GradScaler runs."""

    dtype: torch.dtype | None
    scaler: bool

    @property
    def name(self) -> str:
        return precision_name(self.dtype)

    def autocast(self, device: torch.device) -> torch.autocast:
        """Autocast to ``dtype`` on ``device`` (a no-op for float32)."""
        return torch.autocast(device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)


def resolve_precision(device: torch.device, amp: bool, cpu_bf16: bool) -> Precision:
    """CUDA with ``amp``: bfloat16 where the GPU supports it, else float16 with a GradScaler; CUDA without
    ``amp``: float32. CPU: bfloat16 autocast with ``cpu_bf16``, else float32. Weights, optimizer state
    and losses stay float32 in every case."""
    if device.type == "cuda":
        if not amp:
            return Precision(None, False)
        if torch.cuda.is_bf16_supported():
            return Precision(torch.bfloat16, False)
        return Precision(torch.float16, True)
    if device.type == "cpu" and cpu_bf16:
        return Precision(torch.bfloat16, False)
    return Precision(None, False)


@dataclass
class LoopSettings:
    """What the engine needs from a trainer's config (each trainer fills it from its own).

    Attributes:
        out: output folder; ``final_name`` the trained model's file in it.
        iterations, batch_size: SGD iterations and the *global* batch (split over the ranks).
        lr, momentum, weight_decay, grad_clip: SGD; the task's ``lr_factor`` scales ``lr`` per iteration.
        seed: model initialisation and the per-iteration torch seed (the batches are the task's).
        device: ``auto``, ``cpu`` or ``cuda[:k]`` (``cuda:LOCAL_RANK`` under torchrun).
        amp / cpu_bf16: see :func:`resolve_precision`.
        checkpoint_every, keep_snapshots, log_every: see the module docstring (0: only the final checkpoint;
            keep 0: every snapshot).
        workers: data-loading processes per rank (None: 0 on CPU, where they would take the step's cores;
            on CUDA a share of the host's cores, at most 8, see :func:`loader_workers`).
        deterministic: torch's deterministic algorithms (and no cuDNN autotuning, which is on otherwise).
        channels_last: weights (hence activations) in channels-last memory format (None: on CUDA, where
            tensor-core convolutions want it, and under CPU bfloat16 autocast, whose oneDNN kernels are faster
            with it; off for float32 on the CPU).
        compile: run the model through ``torch.compile`` (the first steps pay for compiling).
        sync_bn: BatchNorm statistics over the global batch (with several processes).
        progress: the progress bar (rank 0).
        desc: the progress bar's label, also used in messages (``train segmenter``).
    """

    out: Path
    final_name: str
    iterations: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 1e-4
    grad_clip: float | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    cpu_bf16: bool = False
    checkpoint_every: int = 1000
    keep_snapshots: int = 2
    log_every: int = 20
    workers: int | None = 0
    deterministic: bool = False
    channels_last: bool | None = None
    compile: bool = False
    sync_bn: bool = False
    progress: bool = True
    desc: str = "train"

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.iterations < 1 or self.batch_size < 1 or self.log_every < 1:
            raise ValueError("iterations, batch_size and log_every must be >= 1")
        for name in ("checkpoint_every", "keep_snapshots", "workers"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")


@dataclass(frozen=True)
class Step:
    """One iteration as a task sees it.

    Attributes:
        iteration: 0-based iteration.
        device: this rank's device.
        samples: global positions of this rank's items in the run's sample stream
            (``iteration * batch_size + rank * local_batch + i``): a key for randomness
            drawn per sample, so that it does not depend on the world size.
        seed: the run's seed.
    """

    iteration: int
    device: torch.device
    samples: tuple[int, ...]
    seed: int


class TrainingTask(Protocol):
    """What a trainer adds to the engine."""

    def build_model(self) -> nn.Module:
        """The model to train (called under ``torch.manual_seed(seed)``)."""

    def dataset(self) -> torch.utils.data.Dataset:
        """The training items the batches index."""

    def batches(self, start: int) -> torch.utils.data.Sampler:
        """Global batches of iterations ``start .. iterations - 1`` (each a function of seed and iteration)."""

    def collate(self, items: list[Any]) -> Any:
        """A batch from a rank's items."""

    def lr_factor(self, iteration: int) -> float:
        """The multiplier of the base lr at ``iteration``."""

    def losses(self, model: nn.Module, batch: Any, step: Step) -> dict[str, torch.Tensor]:
        """Named loss parts of a rank's batch (their sum is minimised); batch-mean parts use ``global_mean``."""

    def resume_key(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues."""

    def record(self) -> dict[str, Any]:
        """The run's settings as written to ``train_config.json``."""

    def save(self, path: Path, model: nn.Module, **state: Any) -> None:
        """Write the model and ``state`` to ``path`` in the task's checkpoint format (atomically)."""

    def read(self, path: Path, map_location: torch.device) -> dict[str, Any]:
        """A checkpoint :meth:`save` wrote, checked (an :class:`InputError` when unreadable)."""

    def finish(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        """Called on rank 0 after the last step: extra fields for the final file (may write reports)."""


def loader_workers(requested: int | None, device: torch.device, world: World) -> int:
    """Data-loading processes per rank: ``requested``, or for None 0 on CPU and, on CUDA, the host's cores
    shared among the local ranks, one left for each rank's main process, at most 8."""
    if requested is not None:
        return requested
    if device.type != "cuda":
        return 0
    cores = usable_cores()
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", world.size))  # torchrun's ranks on this host
    return max(0, min(8, cores // max(1, local_ranks) - 1))


def run_training(task: TrainingTask, settings: LoopSettings) -> Path:
    """Train (or resume) ``task``; returns the path of the final model file.

    Under torchrun every rank calls it; rank 0 writes every file.
    """
    world = world_from_env()
    device = resolve_device(rank_device(settings.device, world))
    world = join_world(device)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                deterministic_algorithms(settings.deterministic), \
                cudnn_autotuning(device.type == "cuda" and not settings.deterministic):
            return _Run(task, settings, world, device).run()
    finally:
        leave_world(world)


class _Run:
    def __init__(self, task: TrainingTask, settings: LoopSettings, world: World, device: torch.device) -> None:
        self.task, self.settings, self.world, self.device = task, settings, world, device
        self.local_batch = world.local_batch(settings.batch_size)
        out = settings.out
        self.checkpoints = out / "checkpoints"
        self.final_path, self.last_path = out / settings.final_name, self.checkpoints / "last.pt"
        self.metrics_path = out / "metrics.jsonl"
        self.precision = resolve_precision(device, settings.amp, settings.cpu_bf16)
        self.key = task.resume_key()
        self.writer = CheckpointWriter()
        # per-step loss parts stay on the device until the next sync point (no host sync per step)
        self.unsettled: list[tuple[int, float, torch.Tensor]] = []
        self.loss_names: list[str] = []

    # ------------------------------------------------------------------ set-up
    def build(self) -> None:
        torch.manual_seed(self.settings.seed)
        model = self.task.build_model().to(self.device)
        if self.settings.sync_bn and self.world.distributed:
            model = convert_batchnorm(model)
        channels_last = self.settings.channels_last
        if channels_last is None:
            channels_last = self.device.type == "cuda" or self.precision.dtype == torch.bfloat16
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            if hasattr(model, "channels_last"):  # S4Net converts its normalised input batch as well
                model.channels_last = True
        self.model = model
        self.optimizer = torch.optim.SGD(parameter_groups(model, self.settings.weight_decay), lr=self.settings.lr,
                                         momentum=self.settings.momentum)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.scaler)
        if self.world.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.trained = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        else:
            self.trained = model
        if self.settings.compile:
            self.trained = torch.compile(self.trained)

    def resume(self) -> int:
        """The iteration to go on from (0 for a new run); rank 0 picks the state, every rank loads it."""
        path: Path | None = None
        state: dict[str, Any] | None = None
        if self.world.is_main:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            snapshots = sorted(self.checkpoints.glob("iter_*.pt"), reverse=True)
            state, path = newest_readable_state([self.last_path, *snapshots], lambda p: self.task.read(p, "cpu"))
        path = broadcast_object(str(path) if path else None, self.world)
        if path is None:
            if self.world.is_main and self.metrics_path.exists():
                self.metrics_path.unlink()
            return 0
        if state is None:  # the other ranks read the file rank 0 chose
            state = self.task.read(Path(path), torch.device("cpu"))
        return restore_training(state, self.key, path, self.model, self.optimizer, self.scaler,
                                self.metrics_path if self.world.is_main else None, self.precision.name)

    # ------------------------------------------------------------------ files
    def snapshot(self, iteration: int) -> None:
        """``last.pt`` at ``iteration`` (rank 0), and a periodic snapshot linked to it."""
        if not self.world.is_main:
            return
        # a host copy now; serialising and writing it happen in the background (CheckpointWriter)
        model = HostModel(self.model)
        state = {"optimizer": host_copy(self.optimizer.state_dict()), "scaler": self.scaler.state_dict(),
                 "iteration": iteration, "train": self.key, "precision": self.precision.name}
        every = self.settings.checkpoint_every
        periodic = bool(every and iteration % every == 0 and iteration < self.settings.iterations)

        def write() -> None:
            self.task.save(self.last_path, model, **state)
            if periodic:
                target = self.checkpoints / f"iter_{iteration:07d}.pt"
                target.unlink(missing_ok=True)
                try:  # last.pt is replaced by rename, never rewritten, so a hard link stays this snapshot
                    os.link(self.last_path, target)
                except OSError:
                    self.task.save(target, model, **state)
                prune_snapshots(self.checkpoints, self.settings.keep_snapshots)

        self.writer.submit(write)

    # ------------------------------------------------------------------ the loop
    def run(self) -> Path:
        settings = self.settings
        if self.world.is_main:
            settings.out.mkdir(parents=True, exist_ok=True)
        self.build()
        start = self.resume()
        if self.world.is_main:
            write_json(settings.out / "train_config.json",
                       {**self.task.record(), "world_size": self.world.size, "sync_bn": settings.sync_bn,
                        "precision": self.precision.name}, indent=2)
        done_already = start >= settings.iterations and self.final_path.exists()
        if broadcast_object(done_already, self.world):
            log.info("%s already trained to %d iterations", settings.out, settings.iterations)
            return self.final_path
        workers = loader_workers(settings.workers, self.device, self.world)
        loader = torch.utils.data.DataLoader(
            self.task.dataset(), batch_sampler=RankShare(self.task.batches(start), self.world, settings.batch_size),
            collate_fn=self.task.collate, num_workers=workers, persistent_workers=workers > 0,
            pin_memory=self.device.type == "cuda",
        )
        self.model.train()
        try:
            with stop_on_signals() as stop, self._progress(start) as (bar, metrics):
                for iteration, batch in enumerate(loader, start=start):
                    self.step(iteration, batch, bar, metrics, stop)
        finally:
            self.writer.close()  # the last checkpoint is on disk before anything else happens
        barrier(self.world)
        if self.world.is_main:
            extra = self.task.finish(self.model, self.device)
            self.task.save(self.final_path, self.model, iteration=settings.iterations, train=self.key, **extra)
        barrier(self.world)
        return self.final_path

    @contextlib.contextmanager
    def _progress(self, start: int) -> Iterator[tuple[tqdm, MetricsLog | None]]:
        main = self.world.is_main
        bar = tqdm(total=self.settings.iterations, initial=start, disable=not (main and self.settings.progress),
                   desc=self.settings.desc, unit="it", dynamic_ncols=True)
        handle = self.metrics_path.open("a", encoding="utf-8") if main else None
        try:
            yield bar, (MetricsLog(handle, self.settings.batch_size, self.settings.log_every,
                                   self.settings.iterations) if main else None)
        finally:
            bar.close()
            if handle is not None:
                handle.close()

    def step(self, iteration: int, batch: Any, bar: tqdm, metrics: MetricsLog | None, stop: StopRequest) -> None:
        settings = self.settings
        lr = settings.lr * self.task.lr_factor(iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(settings.seed * 1_000_003 + iteration)  # randomness inside a step: a function of it
        first = iteration * settings.batch_size + self.world.rank * self.local_batch
        step = Step(iteration, self.device, tuple(range(first, first + self.local_batch)), settings.seed)
        with self.precision.autocast(self.device):
            losses = self.task.losses(self.trained, batch, step)
        loss = sum(losses.values())
        self.loss_names = list(losses)
        self.unsettled.append((iteration, lr, torch.stack([v.detach().float() for v in losses.values()])))
        optimizer_step(loss, self.trained, self.optimizer, self.scaler, settings.grad_clip)
        done = iteration + 1
        bar.update(1)
        checkpoint = bool(settings.checkpoint_every and done % settings.checkpoint_every == 0) \
            or done == settings.iterations
        # Sync points, the same on every rank: each logged iteration, each checkpoint, the last step; alone,
        # also as soon as a stop is asked for (with several ranks, the stop rides the next sync point).
        if not (checkpoint or done % settings.log_every == 0 or (stop.requested and not self.world.distributed)):
            return
        stopping = self.settle(bar, metrics, stop.requested)
        if checkpoint or stopping:
            self.snapshot(done)
        if stopping and done < settings.iterations:
            self.writer.wait()
            barrier(self.world)
            raise Preempted(done, self.last_path)

    def settle(self, bar: tqdm, metrics: MetricsLog | None, stop_requested: bool) -> bool:
        """Read the steps since the last sync point back in one exchange (and one host sync): the loss parts
        averaged over the ranks, checked finite in order (a non-finite one raises :class:`TrainingDiverged`
        naming its iteration, before any checkpoint of the weights it spoilt), logged; returns whether any
        rank was asked to stop."""
        rows = torch.stack([parts for _, _, parts in self.unsettled])
        flag = torch.tensor([float(stop_requested)], device=rows.device)
        shared = all_ranks_sum(torch.cat([rows.flatten(), flag])).tolist()
        count = len(self.loss_names)
        for row, (iteration, lr, _) in enumerate(self.unsettled):
            values = shared[row * count:(row + 1) * count]
            parts = {name: value / self.world.size for name, value in zip(self.loss_names, values, strict=True)}
            if not all(map(math.isfinite, parts.values())):
                described = ", ".join(f"{k}={v:.4g}" for k, v in parts.items())
                self.writer.wait()
                kept = self.last_path if self.last_path.exists() else "none (no checkpoint was written yet)"
                raise TrainingDiverged(f"{self.settings.desc}: loss is not finite at iteration {iteration} "
                                       f"({described}); last good checkpoint: {kept}")
            if metrics is not None:
                means = metrics.add(iteration + 1, lr, parts)
                if means is not None:
                    bar.set_postfix({k.removeprefix("loss_"): f"{v:.3f}" for k, v in means.items()})
        self.unsettled.clear()
        return shared[-1] > 0
