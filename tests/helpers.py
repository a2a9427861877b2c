"""Checks shared by several test modules."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def label_contacts(labels: np.ndarray) -> int:
    """Pairs of 4-neighbours holding two different non-void labels (VOC puts void between)."""
    vertical = (labels[1:] != labels[:-1]) & (labels[1:] != 255) & (labels[:-1] != 255)
    horizontal = (labels[:, 1:] != labels[:, :-1]) & (labels[:, 1:] != 255) & (labels[:, :-1] != 255)
    return int(vertical.sum() + horizontal.sum())


# A small S4Net for tests (random weights, 64 px) and proxy-label thresholds loose enough for it
SMALL_S4NET = dict(norm="bn", image_size=64, fpn_channels=32, head_channels=32, compress_channels=16,
                   branch_channels=(16, 8))
LOOSE_CUES = ["--score-threshold", "0", "--min-area", "0", "--foreground", "0.5", "--background", "0.45"]


def proxy_label_args(checkpoint: Path, world: Path, out: Path, *extra: str, batch_size: int = 2) -> list[str]:
    """`wsss proxy-labels` arguments over a synthetic world's ImageNet subset, with the loose cue thresholds."""
    imagenet = world / "imagenet"
    return ["proxy-labels", "--checkpoint", str(checkpoint), "--images", str(imagenet), "--keywords",
            str(imagenet / "keywords.csv"), "--out", str(out), "--batch-size", str(batch_size), "-q", *LOOSE_CUES,
            *extra]


def random_s4net_checkpoint(path: Path) -> Path:
    """Save a random-weight small S4Net whose masks vary (its branch weights spread) at ``path``."""
    import torch

    import s4net
    from s4net.checkpoint import save_checkpoint
    from s4net.config import S4NetConfig

    torch.manual_seed(0)
    model = s4net.build_model(S4NetConfig(backbone="resnet18", **SMALL_S4NET))
    with torch.no_grad():
        model.branch.logits.weight.normal_(0, 0.05)
    save_checkpoint(path, model)
    return path


def hold_mib(mib: int) -> None:
    """Allocate and touch ``mib`` MiB (a module-level function, so a spawned process can run it)."""
    block = np.ones(mib * 1024 * 1024 // 8)
    block.sum()


class Payload:
    """Unpickling this runs a shell command: what a hostile checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
