"""Where training runs: the device, bfloat16 support on CPU, deterministic algorithms (precision: loop.Precision)."""

from __future__ import annotations

import contextlib
import logging
import os
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


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, e.g. under SLURM)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


CUBLAS_WORKSPACE = ":4096:8"  # what torch's reproducibility notes ask for deterministic cuBLAS


def deterministic_cublas() -> None:
    """Set ``CUBLAS_WORKSPACE_CONFIG`` (unless already set), so cuBLAS products are deterministic.

    cuBLAS reads it when this process first uses it; call this before any CUDA work. Without it
    torch's deterministic mode refuses every CUDA matrix product (any Linear layer, for one).
    """
    if os.environ.get("CUBLAS_WORKSPACE_CONFIG") is None:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
        log.info("CUBLAS_WORKSPACE_CONFIG=%s for deterministic cuBLAS", CUBLAS_WORKSPACE)


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """torch's deterministic algorithms on inside the block when ``enabled`` (with deterministic cuBLAS
    workspaces, see :func:`deterministic_cublas`); the caller's setting after it."""
    previous = torch.are_deterministic_algorithms_enabled()
    if enabled:
        deterministic_cublas()
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


@contextlib.contextmanager
def cudnn_autotuning(enabled: bool) -> Iterator[None]:
    """cuDNN's benchmark mode (it times the convolution algorithms for each new shape and keeps the fastest)
    on or off inside the block, as ``enabled`` says; the caller's setting after it. Off for deterministic
    runs (the algorithm it picks may differ from run to run) and for work whose shapes change with every
    call (each new shape would be timed again). No effect off CUDA."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous
