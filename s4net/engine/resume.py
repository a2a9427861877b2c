"""Resuming a run: its ``last.pt`` (or the newest readable snapshot), checked against the run's settings."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from s4net.engine.metrics_log import trim_metrics
from s4net.errors import InputError

log = logging.getLogger(__name__)


# How a run computes, not what it learns: a run may resume on another device or CPU, in another precision.
# (``cpu_bf16`` was part of S4Net's key, and ``amp`` is part of the segmenter's: a key that differs
# only there still resumes.)
PRECISION_FIELDS = ("cpu_bf16", "amp")


def settings_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> str:
    """``field: old -> new`` for every (nested) setting that differs, comma-separated."""
    parts = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name, "<unset>"), new.get(name, "<unset>")
        if isinstance(a, dict) and isinstance(b, dict):
            inner = settings_diff(a, b, f"{prefix}{name}.")
            parts += [inner] if inner else []
        elif a != b:
            parts.append(f"{prefix}{name}: {a} -> {b}")
    return ", ".join(parts)


def restore_training(
    state: dict[str, Any], key: dict[str, Any], last_path: Path | str, model: torch.nn.Module,
    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, metrics_path: Path | None,
    precision: str | None = None,
) -> int:
    """Load a ``last.pt`` state written with the same settings (``key``); returns the iteration to go on from.

    Metrics lines logged after that checkpoint (by a run killed later) are dropped from ``metrics_path``
    (None: left alone, as on the ranks other than 0). A scaler state saved while no GradScaler ran
    (float32 or bfloat16) leaves a running scaler at its initial state. Settings of
    ``PRECISION_FIELDS`` may differ (``precision``, this run's, is logged beside the state's).
    """
    stored = {k: v for k, v in (state.get("train") or {}).items() if k not in PRECISION_FIELDS}
    wanted = {k: v for k, v in key.items() if k not in PRECISION_FIELDS}
    if stored != wanted:
        changed = settings_diff(stored, wanted)
        raise InputError(last_path, f"was written with different training settings ({changed}); use another --out or "
                                    "delete the folder to start over")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler.is_enabled() and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    start = int(state["iteration"])
    before = state.get("precision")
    if metrics_path is not None and precision is not None and before is not None and before != precision:
        log.info("%s was written by a %s run; this one goes on in %s", last_path, before, precision)
    if metrics_path is not None:
        log.info("resuming from %s at iteration %d", last_path, start)
        trim_metrics(metrics_path, start)
    return start


def newest_readable_state(
    candidates: Sequence[Path], read: Callable[[Path], dict[str, Any]],
) -> tuple[dict[str, Any] | None, Path | None]:
    """The first of ``candidates`` (newest first) that reads as a checkpoint, and its path.

    One that exists but cannot be read (truncated or corrupted outside our atomic writes) is
    renamed ``<name>.corrupt`` with a warning and the next is tried; ``(None, None)`` when none is left.
    """
    for path in candidates:
        if not path.exists():
            continue
        try:
            return read(path), path
        except InputError as exc:
            aside = path.with_name(path.name + ".corrupt")
            os.replace(path, aside)
            log.warning("%s; moved it to %s and looked for an earlier state", exc, aside.name)
    return None, None


def prune_snapshots(folder: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` periodic snapshots ``iter_N.pt`` (0: keep all)."""
    if keep <= 0:
        return
    for old in sorted(folder.glob("iter_*.pt"))[:-keep]:
        old.unlink(missing_ok=True)
