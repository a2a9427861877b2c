"""Wall-clock timing shared by the benchmarks: medians over repeats, contenders taken in turns."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def interleaved(fns: dict[str, Callable[[], object]], warmup: int, repeats: int,
                device: torch.device) -> dict[str, dict[str, float]]:
    """Median and spread of each callable over ``repeats`` rounds after ``warmup`` rounds.

    The callables are taken in turns within each round, so drifts of the machine hit
    all of them alike; CUDA is synchronised around every call.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {
        name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t), "repeats": repeats}
        for name, t in times.items()
    }


def timed(fn: Callable[[], object], warmup: int, repeats: int, device: torch.device) -> dict[str, float]:
    """:func:`interleaved` for one callable."""
    return interleaved({"fn": fn}, warmup, repeats, device)["fn"]
