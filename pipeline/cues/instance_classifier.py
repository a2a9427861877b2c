"""The instance classifier behind multi-keyword assignment.

Trained on the salient instances of single-keyword images (the keyword is the
instance's label), on S4Net backbone features averaged inside each instance's mask.
A linear layer on standardised features, or one hidden layer, is enough.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from pipeline.classes import FOREGROUND_CLASSES
from pipeline.cues.detections import subset_detections
from pipeline.cues.keyword_assignment import KEPT, AssignmentConfig, candidate_status, instance_areas
from pipeline.datasets.imagenet import ImageNetSubset, KeywordEntry
from s4net.errors import InputError
from s4net.inference import Detections
from s4net.io.states import StateFormat, fit_weights, read_state, save_state

log = logging.getLogger(__name__)

CHECKPOINT = StateFormat("wsss-instance-classifier", 1, "instance classifier", article="an",
                         hint="train one with `wsss instance-classifier`")


@dataclass(frozen=True)
class ClassifierConfig:
    """How the instance classifier is trained.

    Attributes:
        hidden: width of the hidden layer; 0 for a linear classifier.
        epochs: passes over the training instances (full batch).
        lr: Adam learning rate.
        weight_decay: L2 on the weights.
        holdout: fraction of instances held out to report accuracy (0: none).
        seed: shuffling and initialisation.
    """

    hidden: int = 256
    epochs: int = 300
    lr: float = 1e-2
    weight_decay: float = 1e-4
    holdout: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden < 0 or self.epochs < 1 or self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"ClassifierConfig needs hidden >= 0, epochs >= 1, lr > 0, weight_decay >= 0; got {self}")
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"ClassifierConfig.holdout={self.holdout} must be in [0, 1)")


class InstanceClassifier(nn.Module):
    """Standardised features -> logits over the 20 VOC foreground classes."""

    def __init__(self, features: int, hidden: int = 256, classes: int = len(FOREGROUND_CLASSES)) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("std", torch.ones(features))
        if hidden:
            self.head: nn.Module = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes))
        else:
            self.head = nn.Linear(features, classes)
        self.features = features
        self.hidden = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((x - self.mean) / self.std)

    @torch.no_grad()
    def keyword_probabilities(self, features: np.ndarray, keywords: Sequence[str]) -> np.ndarray:
        """float[K, len(keywords)]: class probabilities restricted to the keywords, renormalised."""
        if len(features) == 0:
            return np.zeros((0, len(keywords)), dtype=np.float64)
        columns = [FOREGROUND_CLASSES.index(k) for k in keywords]
        logits = self(torch.as_tensor(features, dtype=torch.float32))[:, columns]
        return torch.softmax(logits.double(), dim=1).numpy()


def train_classifier(features: np.ndarray, labels: np.ndarray,
                     config: ClassifierConfig) -> tuple[InstanceClassifier, dict]:
    """Fit an :class:`InstanceClassifier`; returns it and a report (counts, accuracies).

    Args:
        features: float[N, D] instance features.
        labels: int[N] foreground class index in 0..19 (``FOREGROUND_CLASSES`` order).
    """
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(f"need features [N, D] and labels [N], got {features.shape} and {labels.shape}")
    if len(features) < 2:
        raise ValueError(f"need at least 2 training instances, got {len(features)}")
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(features), generator=generator).numpy()
    held = int(round(config.holdout * len(features))) if config.holdout else 0
    test_idx, train_idx = order[:held], order[held:]
    x = torch.from_numpy(features)
    y = torch.from_numpy(labels)
    with torch.random.fork_rng():  # seeded initialisation without touching the global generator
        torch.manual_seed(config.seed)
        model = InstanceClassifier(features.shape[1], config.hidden)
    train_x = x[train_idx]
    model.mean.copy_(train_x.mean(0))
    model.std.copy_(train_x.std(0).clamp(min=1e-6) if len(train_x) > 1 else torch.ones_like(model.std))
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(config.epochs):
        optimiser.zero_grad()
        loss = loss_fn(model(train_x), y[train_idx])
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        train_acc = float((model(train_x).argmax(1) == y[train_idx]).float().mean())
        test_acc = float((model(x[test_idx]).argmax(1) == y[test_idx]).float().mean()) if held else None
    report = {
        "instances": int(len(features)),
        "train_instances": int(len(train_idx)),
        "heldout_instances": int(held),
        "classes_seen": sorted({FOREGROUND_CLASSES[i] for i in labels.tolist()}),
        "train_accuracy": train_acc,
        "heldout_accuracy": test_acc,
        "final_loss": float(loss.item()),
        "config": asdict(config),
    }
    log.info("instance classifier: %d instances, train accuracy %.3f, held-out %s", len(features), train_acc,
             "n/a" if test_acc is None else f"{test_acc:.3f}")
    return model, report


def save_classifier(path: str | os.PathLike, model: InstanceClassifier, report: dict) -> None:
    """Write weights, shape and training report (atomic; loads with ``weights_only=True``)."""
    save_state(path, CHECKPOINT, features=model.features, hidden=model.hidden, state_dict=model.state_dict(),
               report=report)


def load_classifier(path: str | os.PathLike) -> tuple[InstanceClassifier, dict]:
    """Read a classifier written by :func:`save_classifier`."""
    payload = read_state(path, CHECKPOINT)
    try:
        model = InstanceClassifier(int(payload["features"]), int(payload["hidden"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(path, f"bad shape in instance classifier ({exc.__class__.__name__}: {exc})") from None
    fit_weights(model, payload["state_dict"], path)
    return model.eval(), payload.get("report", {})


def collect_training_instances(
    detections: Iterator[Detections], entries: dict[str, KeywordEntry], config: AssignmentConfig, max_per_class: int
) -> tuple[np.ndarray, np.ndarray]:
    """Features and class indices (0..19) of kept instances of single-keyword images."""
    features, labels = [], []
    per_class = dict.fromkeys(range(len(FOREGROUND_CLASSES)), 0)
    for det in detections:
        entry = entries[det.key]
        cls = FOREGROUND_CLASSES.index(entry.keywords[0])
        if per_class[cls] >= max_per_class or det.features is None:
            continue
        status = candidate_status(det.scores, instance_areas(det.masks, config.mask_threshold), config)
        for i in range(len(det.scores)):
            if status[i] == KEPT and per_class[cls] < max_per_class:
                features.append(det.features[i])
                labels.append(cls)
                per_class[cls] += 1
    if not features:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return np.stack(features).astype(np.float32), np.asarray(labels, dtype=np.int64)


def fit_instance_classifier(
    model, subset: ImageNetSubset, assignment: AssignmentConfig, config: ClassifierConfig, out: Path,
    batch_size: int = 8, device="cpu", progress: bool = True, max_per_class: int = 500, autocast=None,
) -> tuple[InstanceClassifier, dict]:
    """Train the instance classifier on the single-keyword images of ``subset`` and save it to ``out``
    (``autocast``: the dtype S4Net runs in, None for float32)."""
    singles = [i for i, e in enumerate(subset.entries) if len(e.keywords) == 1]
    entries = {subset.entries[i].image: subset.entries[i] for i in singles}
    skipped: list[dict[str, str]] = []
    features, labels = collect_training_instances(
        subset_detections(model, subset, singles, batch_size, device, progress, skipped, "classifier instances",
                          autocast),
        entries, assignment, max_per_class,
    )
    if len(labels) < 2:
        raise InputError(subset.root, f"only {len(labels)} salient instances (score >= {assignment.score_threshold}) "
                                      "in its single-keyword images: too few to train the instance classifier")
    classifier, report = train_classifier(features, labels, config)
    report["single_keyword_images"] = len(singles)
    report["skipped_images"] = len(skipped)
    save_classifier(out, classifier, report)
    return classifier, report
