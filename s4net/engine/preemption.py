"""Preemption: SIGTERM or SIGUSR1 asks a trainer to finish its step, write a checkpoint and exit 75.

SLURM sends such a signal ahead of a job's time limit (``--signal``) and when it preempts a
job; the trainer stops at a step boundary, saves ``last.pt`` and exits with
:data:`EXIT_PREEMPTED`, so the requeued or rerun job resumes from that step.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Iterator

from s4net.errors import TrainingStopped

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped on request with its state saved; run the same command again
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(TrainingStopped):
    """Training stopped on a signal after writing its checkpoint; rerunning resumes from ``iteration`` (exit 75)."""

    exit_status = EXIT_PREEMPTED
    label = ""

    def __init__(self, iteration: int, checkpoint: object) -> None:
        super().__init__(f"stopped on a signal at iteration {iteration} with its state saved in {checkpoint}; "
                         "run the same command again to resume")
        self.iteration = iteration


class StopRequest:
    """Set by a stop signal; read by the training loop at the end of each step."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal is None:
            log.warning("received %s: stopping after this step (with several processes: at the next logged "
                        "iteration, where they all meet) and saving a checkpoint", signal.Signals(signum).name)
        self.signal = signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Inside the block SIGTERM and SIGUSR1 set the returned request instead of killing the process.

    Outside the main thread (where handlers cannot be installed) the request is never set.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {signum: signal.signal(signum, request._handle) for signum in STOP_SIGNALS}
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
