"""Path checks: names read from annotation or keyword files stay inside their root."""

from __future__ import annotations

import os
from pathlib import Path

from s4net.errors import InputError


def resolve_inside(root: str | os.PathLike, relative: str, source: str | os.PathLike | None = None) -> Path:
    """Join ``relative`` onto ``root`` and refuse names that lead outside ``root``.

    The check is on the name as written (absolute names and ``..`` components that
    climb out are refused with an :class:`InputError` naming ``source``, the file the
    name came from). Symbolic links placed inside the root are the dataset owner's
    choice and are followed, so a subset made of links into a full ImageNet works.
    """
    name = str(relative)
    if not name or "\x00" in name:
        raise InputError(source, f"invalid image path {name!r}")
    if Path(name).is_absolute():
        raise InputError(source, f"image path {name!r} is absolute; it must be relative to the dataset root")
    root_path = Path(os.path.abspath(root))
    joined = Path(os.path.normpath(root_path / name))
    if joined != root_path and root_path not in joined.parents:
        raise InputError(source, f"image path {name!r} escapes the dataset root {root_path}")
    return joined
