"""Peak resident memory of one piece of work, measured in a fresh process so nothing else inflates it.

``peak_rss_mib(work, *args)`` spawns a process, runs ``work(*args)`` there (a module-level
function, so that it pickles by name) and returns that process's peak RSS and its RSS
high-water mark before the work began (interpreter, torch and the bench's imports), in MiB.
"""

from __future__ import annotations

import multiprocessing
import resource
from typing import Any, Callable


def high_water_mib() -> float:
    """Peak RSS of this process's address space (Linux VmHWM; ``ru_maxrss`` elsewhere), in MiB.

    ``ru_maxrss`` alone would not do on Linux: it survives the exec of a spawned process,
    so a child would report its parent's size at the fork.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    # KiB on Linux, bytes on macOS: Linux is what we run
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(work: Callable[..., Any], args: tuple) -> tuple[float, float]:
    before = high_water_mib()
    work(*args)
    return before, high_water_mib()


def peak_rss_mib(work: Callable[..., Any], *args: Any) -> dict[str, float]:
    """``{"peak_rss_mib", "start_rss_mib", "work_rss_mib"}`` of ``work(*args)`` run in a spawned process."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        before, peak = pool.apply(_measure, (work, args))
    return {"peak_rss_mib": round(peak, 1), "start_rss_mib": round(before, 1), "work_rss_mib": round(peak - before, 1)}
