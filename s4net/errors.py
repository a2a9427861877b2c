"""Error types with one-line messages that name the offending file and the problem."""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad user input (a file, a table row, a config value); the message is one line."""

    def __init__(self, path: str | os.PathLike | None, problem: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{self.path}: {problem}")


class ImageReadError(InputError):
    """An image or label file that cannot be read as asked."""


class DatasetError(InputError):
    """A dataset whose layout or annotation is inconsistent."""


class TrainingStopped(Exception):
    """A training that ended early in a known way; ``exit_status`` is the CLI's exit status.

    Its subclasses are the engine's (:mod:`s4net.engine.loop`, :mod:`s4net.engine.preemption`):
    a diverging loss (status 3) and a stop on SIGTERM/SIGUSR1 with the state saved (status 75).
    """

    exit_status = 1
    label = "error: "
