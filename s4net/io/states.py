"""Tagged torch state files: a dict with ``format`` and ``version``, written atomically, read with ``weights_only``.

The segmenter, the CAM classifier and the Mask R-CNN peer keep their weights (and, for
``last.pt``, the optimizer state) this way; a file of another kind, or a pickle that is
not plain tensors and containers, is refused with a one-line :class:`InputError`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from s4net.errors import InputError
from s4net.io.atomic import atomic_write_bytes


def save_state(path: str | os.PathLike, format: str, version: int, **payload: Any) -> None:
    """Write ``{"format", "version", **payload}`` to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save({"format": format, "version": version, **payload}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_state(path: str | os.PathLike, format: str, version: int, what: str, hint: str = "",
               map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The payload of a file :func:`save_state` wrote with this ``format`` and ``version``.

    ``what`` names the kind in messages ("segmenter checkpoint"); ``hint`` is added when
    the file does not exist ("train one with ...").
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise InputError(path, f"no such {what}{f' ({hint})' if hint else ''}") from None
    except Exception as exc:
        raise InputError(path, f"not a readable {what} ({exc.__class__.__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != format:
        raise InputError(path, f"not a {what} (expected format {format!r})")
    if payload.get("version") != version:
        raise InputError(path, f"{what} version {payload.get('version')} is not {version}")
    return payload
