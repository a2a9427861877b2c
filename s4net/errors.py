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
