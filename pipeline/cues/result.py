"""What every cue returns (:class:`CueResult`) and the interface a cue keeps (:class:`Cue`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from s4net.inference import Detections


@dataclass(frozen=True)
class CueResult:
    """A proxy label and what the CRF and the manifest need.

    Attributes:
        labels: uint8[H, W] (0 background, 1..20, 255 ignore).
        probabilities: float32[n, H, W] of ``label_ids`` (CRF unary), or None when
            there is nothing for a CRF to decide.
        label_ids: class index of each probability plane (0 first).
        record: manifest fields (instances with score, area, keyword, status).
    """

    labels: np.ndarray
    probabilities: np.ndarray | None
    label_ids: list[int]
    record: dict[str, Any]


class Cue(Protocol):
    """``cue(detections, keywords)``: one image's proxy label from its S4Net detections and keywords."""

    @property
    def name(self) -> str: ...

    def __call__(self, detections: Detections, keywords: Sequence[str]) -> CueResult: ...


def instance_records(detections: Detections, areas: np.ndarray, indices: Sequence[int], keywords: Sequence[str | None],
                     status: Sequence[str], confidence: Sequence[float]) -> list[dict[str, Any]]:
    """Manifest entries of the instances at ``indices``: score, area, keyword, status, confidence."""
    return [
        {
            "score": round(float(detections.scores[i]), 4),
            "area": round(float(areas[i]), 4),
            "keyword": keywords[i],
            "status": status[i],
            "confidence": round(float(confidence[i]), 4),
        }
        for i in indices
    ]
