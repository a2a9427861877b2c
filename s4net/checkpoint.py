"""Checkpoints: config + weights + version, loaded with ``weights_only=True`` only."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from s4net import __version__
from s4net.config import S4NetConfig
from s4net.errors import InputError
from s4net.io.atomic import atomic_write_bytes

FORMAT = "s4net-checkpoint"
FORMAT_VERSION = 1


def build_model(config: S4NetConfig | dict[str, Any]) -> "torch.nn.Module":
    """An S4Net from a config (a dataclass or a plain dict of its fields)."""
    from s4net.models.s4net import S4Net

    if not isinstance(config, S4NetConfig):
        config = S4NetConfig.from_dict(config)
    return S4Net(config)


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, **state: Any) -> None:
    """Write model weights, its config and version (plus any extra ``state``) atomically."""
    if getattr(model, "inference_only", False):
        raise ValueError("refusing to save a model whose BatchNorm was folded for inference: its weights no longer fit its config")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "s4net_version": __version__,
        "config": model.config.to_dict(),
        "model": model.state_dict(),
        **state,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict, refusing anything that is not a plain-tensor S4Net checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such checkpoint")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not ours"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise InputError(path, f"not a loadable weights-only checkpoint ({first[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(path, f"not an S4Net checkpoint (format field is {payload.get('format') if isinstance(payload, dict) else type(payload).__name__!r})")
    if payload.get("format_version") != FORMAT_VERSION:
        raise InputError(
            path, f"checkpoint format_version {payload.get('format_version')} differs from this library's {FORMAT_VERSION}"
        )
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


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the model from a checkpoint's config and load its weights (eval mode)."""
    payload = read_checkpoint(path, map_location)
    try:
        config = S4NetConfig.from_dict(payload["config"])
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"bad config in checkpoint: {exc}") from None
    config.pretrained = None  # the weights below replace any ImageNet initialisation
    model = build_model(config)
    fit_weights(model, payload["model"], path)
    model.to(map_location).eval()
    return model
