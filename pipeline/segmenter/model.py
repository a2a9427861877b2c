"""The semantic segmenter (DeepLab from segmentation-models-pytorch) and its checkpoints."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.segmenter.config import SegmenterConfig
from pipeline.segmenter.deterministic import make_deterministic
from s4net.config import config_from_mapping
from s4net.errors import InputError
from s4net.io.states import StateFormat, fit_weights, read_state, save_state

CHECKPOINT = StateFormat("wsss-segmenter", 1, "segmenter checkpoint", hint="train one with `wsss train-segmenter`")


def build_segmenter(config: SegmenterConfig, encoder_weights: str | os.PathLike | None = None,
                    deterministic: bool = False) -> nn.Module:
    """A DeepLab with random weights, or its encoder loaded from a local ImageNet checkpoint.

    Nothing is downloaded: ``encoder_weights`` is a torchvision-style state dict file
    (e.g. ``resnet101-63fe2227.pth``) whose keys match the encoder (``fc.*`` is dropped).
    ``deterministic``: the ops without a deterministic CUDA backward are replaced by their
    deterministic twins (:func:`~pipeline.segmenter.deterministic.make_deterministic`; same
    numbers within float rounding, same state dict, slower).
    """
    import segmentation_models_pytorch as smp

    try:
        model = smp.create_model(config.arch, encoder_name=config.encoder, encoder_weights=None, classes=config.classes)
    except KeyError as exc:
        raise InputError(None, f"unknown encoder {config.encoder!r} for segmentation-models-pytorch ({exc})") from None
    if encoder_weights is not None:
        path = Path(encoder_weights)
        if not path.is_file():
            raise InputError(
                path,
                "encoder weights not found; nothing is downloaded at run time: fetch the torchvision ImageNet "
                f"weights of {config.encoder} yourself and pass their path (or train without --encoder-weights)",
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        # smp's override returns nothing
        missing, unexpected = nn.Module.load_state_dict(model.encoder, state, strict=False)
        if missing or unexpected:
            raise InputError(path, f"does not fit encoder {config.encoder}: {len(missing)} missing, "
                                   f"{len(unexpected)} unexpected keys")
    return make_deterministic(model) if deterministic else model


def save_segmenter(path: str | os.PathLike, model: nn.Module, config: SegmenterConfig, **state: Any) -> None:
    """Write config, weights and any extra ``state`` atomically (loads with ``weights_only=True``)."""
    save_state(path, CHECKPOINT, config=asdict(config), model=model.state_dict(), **state)


def read_segmenter(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw contents of a segmenter checkpoint, checked."""
    return read_state(path, CHECKPOINT, map_location)


def load_segmenter(path: str | os.PathLike,
                   map_location: str | torch.device = "cpu") -> tuple[nn.Module, SegmenterConfig]:
    """Model (eval mode) and config from a segmenter checkpoint."""
    payload = read_segmenter(path, map_location)
    try:
        config = config_from_mapping(SegmenterConfig, payload["config"])
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"bad config in segmenter checkpoint: {exc}") from None
    model = build_segmenter(config)
    fit_weights(model, payload["model"], path)
    return model.to(map_location).eval(), config
