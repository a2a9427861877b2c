"""Checkpoints of every kind: tagged torch state files, written atomically, read with ``weights_only``.

One writer (:func:`save_state`) and one reader (:func:`read_state`) serve every kind the
project keeps: S4Net checkpoints, the segmenter, the CAM classifier, the instance
classifier, the Mask R-CNN peer, and each trainer's ``last.pt``. A file is a dict whose
``format`` names its kind and whose version field says which layout of that kind it holds
(:class:`StateFormat`); a file of another kind or version, or a pickle that is not plain
tensors and containers, is refused with a one-line :class:`InputError`.
:func:`fit_weights` loads the weights into the model its config built, or names the tensor
that does not fit.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from s4net.errors import InputError
from s4net.io.atomic import atomic_write_bytes

# Failures of the machine, not of the file: they propagate as they are, so that no caller takes a
# good checkpoint for a damaged one (and renames it, or starts over).
RESOURCE_ERRORS: tuple[type[BaseException], ...] = (torch.cuda.OutOfMemoryError, MemoryError)


@dataclass(frozen=True)
class StateFormat:
    """One kind of checkpoint file.

    Attributes:
        name: the file's ``format`` field (``"wsss-segmenter"``).
        version: the layout this release reads and writes.
        noun: the kind in messages (``"segmenter checkpoint"``); ``article`` goes before it.
        hint: added when the file does not exist (``"train one with `wsss train-cam`"``).
        version_key: the field holding the version (S4Net checkpoints say ``format_version``).
    """

    name: str
    version: int
    noun: str
    article: str = "a"
    hint: str = ""
    version_key: str = "version"


def save_state(path: str | os.PathLike, kind: StateFormat, **payload: Any) -> None:
    """Write ``{"format", <version_key>, **payload}`` to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save({"format": kind.name, kind.version_key: kind.version, **payload}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_state(path: str | os.PathLike, kind: StateFormat, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The payload of a file :func:`save_state` wrote for ``kind``, checked; never unpickles code."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, f"no such {kind.noun}{f' ({kind.hint})' if kind.hint else ''}")
    if not path.is_file():
        raise InputError(path, f"not a regular file, so not {kind.article} {kind.noun}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except RESOURCE_ERRORS:  # the file may be fine: the machine ran out, so say so rather than call it damaged
        raise
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not ours"
        text = str(exc).strip()
        first = text.splitlines()[0][:200] if text else exc.__class__.__name__
        raise InputError(path, f"not a loadable weights-only checkpoint ({first})") from None
    found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
    if found != kind.name:
        raise InputError(path, f"not {kind.article} {kind.noun} (its format is {found!r}, expected {kind.name!r})")
    if payload.get(kind.version_key) != kind.version:
        raise InputError(path, f"{kind.noun} {kind.version_key} {payload.get(kind.version_key)} differs from this "
                               f"library's {kind.version}")
    return payload


def fit_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Load ``state`` into ``model``, or say in one line which tensor does not fit the model its config built."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape than the config builds
        detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc)[:200])
        raise InputError(path, f"weights do not fit the checkpoint's own config: {detail}") from None
    if result.missing_keys or result.unexpected_keys:
        raise InputError(
            path,
            f"weights do not fit the checkpoint's own config: missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}",
        )
