"""The training kit every trainer shares (S4Net, the segmenter, the CAM classifier, the Mask R-CNN peer).

* :mod:`~s4net.engine.devices`: the device, autocast and deterministic algorithms;
* :mod:`~s4net.engine.optimization`: parameter groups, the optimizer step, lr schedules;
* :mod:`~s4net.engine.metrics_log`: the ``metrics.jsonl`` writer;
* :mod:`~s4net.engine.resume`: resuming from ``last.pt`` (or an earlier snapshot) and pruning snapshots.

Each trainer keeps its model, its step and its config; the loop's parts come from here.
"""

from s4net.engine.devices import autocast_context, deterministic_algorithms, resolve_cpu_bf16, resolve_device
from s4net.engine.metrics_log import MetricsLog, trim_metrics
from s4net.engine.optimization import optimizer_step, parameter_groups, poly_factor, step_factor
from s4net.engine.resume import newest_readable_state, prune_snapshots, restore_training, settings_diff

__all__ = [
    "MetricsLog",
    "autocast_context",
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
