"""The training kit every trainer shares (S4Net, the segmenter, the CAM classifier, the Mask R-CNN peer).

* :mod:`~s4net.engine.devices`: the device, bfloat16 support on CPU and deterministic algorithms;
* :mod:`~s4net.engine.optimization`: parameter groups, the optimizer step, lr schedules;
* :mod:`~s4net.engine.metrics_log`: the ``metrics.jsonl`` writer;
* :mod:`~s4net.engine.resume`: resuming from ``last.pt`` (or an earlier snapshot) and pruning snapshots;
* :mod:`~s4net.engine.distributed`: torchrun's ranks, their share of the global batch, ``global_mean``;
* :mod:`~s4net.engine.sync_batchnorm`: BatchNorm over the global batch, on any device;
* :mod:`~s4net.engine.preemption`: SIGTERM/SIGUSR1 -> checkpoint and exit 75;
* :mod:`~s4net.engine.loop`: the loop itself (:func:`run_training`).

Each trainer is a :class:`TrainingTask` (its model, its data, its loss, its files) on :func:`run_training`;
none keeps a loop of its own.
"""

from s4net.engine.devices import deterministic_algorithms, resolve_cpu_bf16, resolve_device
from s4net.engine.distributed import World, global_mean
from s4net.engine.loop import (
    LoopSettings,
    Precision,
    Step,
    TrainingDiverged,
    TrainingTask,
    precision_name,
    resolve_precision,
    run_training,
)
from s4net.engine.metrics_log import MetricsLog, trim_metrics
from s4net.engine.optimization import optimizer_step, parameter_groups, poly_factor, step_factor
from s4net.engine.preemption import EXIT_PREEMPTED, Preempted
from s4net.engine.resume import newest_readable_state, prune_snapshots, restore_training, settings_diff

__all__ = [
    "EXIT_PREEMPTED",
    "LoopSettings",
    "Precision",
    "Preempted",
    "Step",
    "TrainingDiverged",
    "TrainingTask",
    "World",
    "global_mean",
    "precision_name",
    "resolve_precision",
    "run_training",
    "MetricsLog",
    "deterministic_algorithms",
    "newest_readable_state",
    "optimizer_step",
    "parameter_groups",
    "poly_factor",
    "prune_snapshots",
    "resolve_cpu_bf16",
    "resolve_device",
    "restore_training",
    "settings_diff",
    "step_factor",
    "trim_metrics",
]
