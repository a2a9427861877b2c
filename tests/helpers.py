"""Checks shared by several test modules."""

from __future__ import annotations

import numpy as np


def label_contacts(labels: np.ndarray) -> int:
    """Pairs of 4-neighbours holding two different non-void labels (VOC puts void between)."""
    vertical = (labels[1:] != labels[:-1]) & (labels[1:] != 255) & (labels[:-1] != 255)
    horizontal = (labels[:, 1:] != labels[:, :-1]) & (labels[:, 1:] != 255) & (labels[:, :-1] != 255)
    return int(vertical.sum() + horizontal.sum())
