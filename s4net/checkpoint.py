"""S4Net checkpoints: config + weights + version, written and read by :mod:`s4net.io.states`."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from s4net import __version__
from s4net.config import S4NetConfig
from s4net.errors import InputError
from s4net.io.states import StateFormat, fit_weights, read_state, save_state

log = logging.getLogger(__name__)

CHECKPOINT = StateFormat("s4net-checkpoint", 1, "S4Net checkpoint", article="an", version_key="format_version")
LEGACY_CONFIG_FIELDS = ("extra",)  # S4NetConfig fields of release 0.1.0 that no release ever read


def build_model(config: S4NetConfig | dict[str, Any]) -> torch.nn.Module:
    """An S4Net from a config (a dataclass or a plain dict of its fields)."""
    from s4net.models.s4net import S4Net

    if not isinstance(config, S4NetConfig):
        config = S4NetConfig.from_dict(config)
    return S4Net(config)


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, **state: Any) -> None:
    """Write model weights, its config and version (plus any extra ``state``) atomically."""
    if getattr(model, "inference_only", False):
        raise ValueError("refusing to save a model whose BatchNorm was folded for inference: its weights no longer "
                         "fit its config")
    save_state(path, CHECKPOINT, s4net_version=__version__, config=model.config.to_dict(), model=model.state_dict(),
               **state)


def _drop_legacy_fields(config: Any, path: str | os.PathLike) -> None:
    """Remove the fields of ``LEGACY_CONFIG_FIELDS`` from a stored model config (in place).

    Release 0.1.0 stored ``extra: {}`` in every config; nothing read it, so the weights are
    described fully without it. A non-empty one is dropped with a warning naming its keys.
    """
    if not isinstance(config, dict):
        return
    for name in LEGACY_CONFIG_FIELDS:
        value = config.pop(name, None)
        if value:
            log.warning("%s: ignoring the model config's %s %s (never read by any release)", path, name, value)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict, refusing anything that is not a plain-tensor S4Net checkpoint.

    Checkpoints of release 0.1.0 are read as today's: their model config (and, in a
    ``last.pt``, the config in its resume key) lose the legacy ``extra`` field.
    """
    payload = read_state(path, CHECKPOINT, map_location)
    _drop_legacy_fields(payload.get("config"), path)
    if isinstance(payload.get("train"), dict):
        _drop_legacy_fields(payload["train"].get("model"), path)
    return payload


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
