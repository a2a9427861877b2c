"""S4Net: single-stage salient-instance segmentation (Fan et al., CVPR 2019).

``build_model(config)`` and ``load_checkpoint(path)`` are the entry points; the
model follows torchvision's detection call contract. They are imported on first use,
so that ``import s4net.config`` (or the workflow's planning helpers) does not load torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["S4NetConfig", "__version__", "build_model", "load_checkpoint", "save_checkpoint"]

_LAZY = {"build_model": "s4net.checkpoint", "load_checkpoint": "s4net.checkpoint",
         "save_checkpoint": "s4net.checkpoint", "S4NetConfig": "s4net.config"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 's4net' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
