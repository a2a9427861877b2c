"""Checkpoints written in the background: the step loop pays for a copy to host memory, not for the write.

At GPU speed a ``last.pt`` of a few hundred MB, serialised and fsynced every few hundred
iterations, would stall the devices for seconds each time. :class:`CheckpointWriter` takes a
host copy of the state (cheap next to a step), and one background thread serialises and writes
it atomically while training goes on. At most one write is in flight: the next checkpoint
waits for the previous one, so host memory holds at most two copies. A failed write (a full
disk) is raised at the next checkpoint or at :meth:`CheckpointWriter.wait`, never lost.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

import torch
from torch import nn


def host_copy(value: Any) -> Any:
    """``value`` with every tensor copied to CPU memory (a fresh copy even of CPU tensors: training mutates them)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: host_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(host_copy(v) for v in value)
    return value


class HostModel:
    """A model as a checkpoint writer sees it: its attributes, and the weights of one moment on the host."""

    def __init__(self, model: nn.Module) -> None:
        self._model = model
        self._state = host_copy(model.state_dict())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state

    def __getattr__(self, name: str) -> Any:  # config, inference_only, ...: fixed while a model trains
        return getattr(self._model, name)


class CheckpointWriter:
    """One background thread that runs checkpoint writes in order, one at a time."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending: Future | None = None

    def submit(self, write: Callable[[], None]) -> None:
        """Run ``write`` in the background once the previous write has finished (raising its error, if any)."""
        self.wait()
        self._pending = self._pool.submit(write)

    def wait(self) -> None:
        """Block until the write in flight is on disk; re-raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Finish the write in flight and stop the thread."""
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)
