"""S4Net: single-stage salient-instance segmentation (Fan et al., CVPR 2019).

``build_model(config)`` and ``load_checkpoint(path)`` are the entry points; the
model follows torchvision's detection call contract.
"""

__version__ = "0.1.0"

from s4net.checkpoint import build_model, load_checkpoint, save_checkpoint  # noqa: E402
from s4net.config import S4NetConfig  # noqa: E402

__all__ = ["S4NetConfig", "__version__", "build_model", "load_checkpoint", "save_checkpoint"]
