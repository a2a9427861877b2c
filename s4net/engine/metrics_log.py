"""``metrics.jsonl``: one JSON line per logged iteration, trimmed back when a run resumes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from s4net.io.atomic import atomic_write_text


class MetricsLog:
    """One JSON line per ``log_every`` iterations (and at the last): lr, mean losses since the last line, images/s.

    ``losses`` of each step are named parts (``loss_mask``, ...) whose sum is ``loss``;
    a single part called ``loss`` is logged once. Returns the means when a line was written.
    """

    def __init__(self, handle: Any, batch_size: int, log_every: int, iterations: int) -> None:
        self.handle, self.batch_size, self.log_every, self.iterations = handle, batch_size, log_every, iterations
        self.sums: dict[str, float] = {}
        self.count = 0
        self.tick = time.perf_counter()

    def add(self, done: int, lr: float, losses: dict[str, float]) -> dict[str, float] | None:
        for name, value in losses.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value)
        self.count += 1
        if done % self.log_every and done != self.iterations:
            return None
        elapsed = time.perf_counter() - self.tick
        means = {name: total / self.count for name, total in self.sums.items()}
        record: dict[str, Any] = {"iteration": done, "lr": round(lr, 8)}
        if list(means) != ["loss"]:
            record.update({name: round(value, 5) for name, value in means.items()})
        record["loss"] = round(sum(means.values()), 5)
        record["images_per_s"] = round(self.count * self.batch_size / elapsed, 3)
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()
        self.sums, self.count, self.tick = {}, 0, time.perf_counter()
        return means


def trim_metrics(path: Path, last_iteration: int) -> None:
    """Drop metrics lines beyond ``last_iteration`` (left by a run killed after its last checkpoint)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["iteration"] <= last_iteration:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            break  # a torn last line from a kill
    atomic_write_text(path, "".join(k + "\n" for k in kept))
