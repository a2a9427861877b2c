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
from typing import Sequence

import numpy as np
import torch
from torch import nn

from pipeline.classes import FOREGROUND_CLASSES
from s4net.checkpoint import fit_weights
from s4net.errors import InputError
from s4net.io.atomic import atomic_path

log = logging.getLogger(__name__)

FORMAT = "wsss-instance-classifier"
VERSION = 1


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


def train_classifier(features: np.ndarray, labels: np.ndarray, config: ClassifierConfig) -> tuple[InstanceClassifier, dict]:
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
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "features": model.features,
        "hidden": model.hidden,
        "state_dict": model.state_dict(),
        "report": report,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_classifier(path: str | os.PathLike) -> tuple[InstanceClassifier, dict]:
    """Read a classifier written by :func:`save_classifier`."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(path, "no such instance classifier") from None
    except Exception as exc:  # a truncated or foreign file
        raise InputError(path, f"not a readable instance classifier ({exc.__class__.__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(path, f"not an instance classifier (expected format {FORMAT!r})")
    if payload.get("version") != VERSION:
        raise InputError(path, f"instance classifier version {payload.get('version')} is not {VERSION}")
    model = InstanceClassifier(int(payload["features"]), int(payload["hidden"]))
    fit_weights(model, payload["state_dict"], path)
    return model.eval(), payload.get("report", {})
