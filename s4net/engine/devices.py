"""Where training runs: the device, bfloat16 support on CPU, deterministic algorithms (precision: loop.Precision)."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import torch

log = logging.getLogger(__name__)


def resolve_cpu_bf16(choice: str) -> bool:
    """``on``/``off``, or ``auto``: on where oneDNN reports bfloat16 support (AVX512 or AMX)."""
    if choice not in ("on", "off", "auto"):
        raise ValueError(f"cpu_bf16={choice!r} must be on, off or auto")
    if choice != "auto":
        return choice == "on"
    try:
        supported = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        supported = False
    log.info("bfloat16 autocast on CPU: %s (auto)", "on" if supported else "off")
    return supported


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available")
    return device


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """torch's deterministic algorithms on inside the block when ``enabled``; the caller's setting after it."""
    previous = torch.are_deterministic_algorithms_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


@contextlib.contextmanager
def cudnn_autotuning(enabled: bool) -> Iterator[None]:
    """cuDNN's benchmark mode (it times the convolution algorithms for each new shape and keeps the fastest)
    inside the block when ``enabled``; the caller's setting after it. Off for deterministic runs: the
    algorithm it picks may differ from run to run."""
    previous = torch.backends.cudnn.benchmark
    if enabled:
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous
