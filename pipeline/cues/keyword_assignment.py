"""Keyword assignment: which of an image's keywords each salient instance gets.

The paper leaves this rule to a supplement we do not have; this one is ours.

* Candidates are the instances scoring at least ``score_threshold``; those smaller
  than ``min_area`` (fraction of the image) are rejected.
* One keyword: every kept instance gets it.
* Several keywords: an instance classifier (trained on instances of single-keyword
  images) gives each instance a probability per keyword, renormalised over the
  image's keywords. When there are at least as many instances as keywords, a
  one-to-one assignment (Hungarian, on -log probability) first gives every keyword
  its most likely instance; the other instances take their most likely keyword.
  Any instance not matched that way whose probability stays below
  ``min_confidence`` becomes ignore.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

KEPT = "kept"
MATCHED = "matched"
LOW_SCORE = "low score"
SMALL = "too small"
LOW_CONFIDENCE = "low confidence"


@dataclass(frozen=True)
class AssignmentConfig:
    """Thresholds of the keyword assignment.

    Attributes:
        score_threshold: instances scoring below are not salient instances (dropped).
        min_area: instances covering less than this fraction of the image are rejected.
        mask_threshold: mask probability that counts a pixel as the instance's.
        min_confidence: classifier probability (over the image's keywords) below which an
            instance of a multi-keyword image that the one-to-one step did not match is ignored.
    """

    score_threshold: float = 0.5
    min_area: float = 0.01
    mask_threshold: float = 0.5
    min_confidence: float = 0.5

    def __post_init__(self) -> None:
        for name in ("score_threshold", "min_area", "mask_threshold", "min_confidence"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"AssignmentConfig.{name}={value} must be in [0, 1]")


@dataclass(frozen=True)
class Assignment:
    """Per instance: the keyword it gets (None: no class) and why.

    ``status`` is ``kept`` or ``matched`` (labelled), ``low score`` (not a salient
    instance: dropped), ``too small`` or ``low confidence`` (its pixels become ignore).
    """

    keywords: tuple[str | None, ...]
    status: tuple[str, ...]
    confidence: tuple[float, ...]

    def labelled(self) -> list[int]:
        """Indices of the instances that carry a keyword."""
        return [i for i, k in enumerate(self.keywords) if k is not None]

    def rejected(self) -> list[int]:
        """Indices of salient instances without a keyword (their pixels are ignore)."""
        return [i for i, s in enumerate(self.status) if s in (SMALL, LOW_CONFIDENCE)]


def instance_areas(masks: np.ndarray, mask_threshold: float) -> np.ndarray:
    """float[K]: the fraction of the image each mask covers at ``mask_threshold``."""
    if len(masks) == 0:
        return np.zeros(0, dtype=np.float64)
    return (masks >= mask_threshold).reshape(len(masks), -1).mean(axis=1)


def candidate_status(scores: np.ndarray, areas: np.ndarray, config: AssignmentConfig) -> list[str]:
    """``kept``, ``low score`` or ``too small`` for each instance (areas as fractions of the image)."""
    status = []
    for score, area in zip(scores.tolist(), areas.tolist(), strict=True):
        if score < config.score_threshold:
            status.append(LOW_SCORE)
        elif area < config.min_area:
            status.append(SMALL)
        else:
            status.append(KEPT)
    return status


def assign_keywords(
    keywords: Sequence[str],
    scores: np.ndarray,
    areas: np.ndarray,
    probabilities: np.ndarray | None,
    config: AssignmentConfig,
) -> Assignment:
    """Assign the image's keywords to its instances (see the module docstring).

    Args:
        keywords: the image's keywords (one or more, distinct).
        scores: float[K] instance scores.
        areas: float[K] instance areas as fractions of the image.
        probabilities: float[K, len(keywords)] classifier probabilities of each
            instance for each keyword (rows need not sum to 1); needed with several keywords.
        config: thresholds.
    """
    if not keywords:
        raise ValueError("an image needs at least one keyword")
    count = len(scores)
    status = candidate_status(np.asarray(scores), np.asarray(areas), config)
    assigned: list[str | None] = [None] * count
    confidence = [0.0] * count
    kept = [i for i in range(count) if status[i] == KEPT]
    if len(keywords) == 1:
        for i in kept:
            assigned[i], confidence[i] = keywords[0], 1.0
        return Assignment(tuple(assigned), tuple(status), tuple(confidence))
    if probabilities is None:
        raise ValueError(f"{len(keywords)} keywords need instance probabilities to be assigned")
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.shape != (count, len(keywords)):
        raise ValueError(f"probabilities have shape {probs.shape}, expected {(count, len(keywords))}")
    probs = probs / np.clip(probs.sum(axis=1, keepdims=True), 1e-12, None)
    matched: set[int] = set()
    if kept and len(kept) >= len(keywords):
        rows, cols = linear_sum_assignment(-np.log(np.clip(probs[kept], 1e-12, None)))
        for row, col in zip(rows, cols, strict=True):
            i = kept[row]
            assigned[i], confidence[i], status[i] = keywords[col], float(probs[i, col]), MATCHED
            matched.add(i)
    for i in kept:
        if i in matched:
            continue
        best = int(np.argmax(probs[i]))
        confidence[i] = float(probs[i, best])
        if confidence[i] >= config.min_confidence:
            assigned[i] = keywords[best]
        else:
            status[i] = LOW_CONFIDENCE
    return Assignment(tuple(assigned), tuple(status), tuple(confidence))
