"""Training batches: resized samples, horizontal flips and a resumable, seeded order.

The order of samples and the flips are pure functions of ``(seed, iteration)``, so a
run resumed at iteration k sees exactly the batches the uninterrupted run saw.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from s4net.data.coco import SalientInstanceDataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainItem:
    """One training image at the network's input size.

    Attributes:
        image: float32 Tensor[3, S, S] in [0, 1].
        boxes: Tensor[N, 4] (x1, y1, x2, y2) at size S.
        masks: float32 Tensor[N, S, S] (bilinear-resized, soft at edges).
        image_id: COCO image id.
    """

    image: torch.Tensor
    boxes: torch.Tensor
    masks: torch.Tensor
    image_id: int


def resize_sample(image: np.ndarray, boxes: np.ndarray, masks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resize an image (uint8 [H, W, 3]), its boxes and masks to ``size`` x ``size`` (aspect not kept)."""
    height, width = image.shape[:2]
    resized = np.array(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    scale = np.array([size / width, size / height, size / width, size / height], dtype=np.float32)
    out_masks = np.stack(
        [np.asarray(Image.fromarray(m.astype(np.float32)).resize((size, size), Image.BILINEAR)) for m in masks]
    ) if len(masks) else np.zeros((0, size, size), dtype=np.float32)
    return resized, boxes.astype(np.float32) * scale, np.clip(out_masks, 0.0, 1.0).astype(np.float32)


class TrainingSet(torch.utils.data.Dataset):
    """Indexes ``(sample_index, flip)`` into resized, optionally flipped training items.

    With ``cache`` the resized samples are kept in memory after first use (the
    synthetic sets are small; real sets should leave it off).
    """

    def __init__(self, source: SalientInstanceDataset, size: int, cache: bool = False) -> None:
        self.source = source
        self.size = size
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, int]] = {}

    def __len__(self) -> int:
        return len(self.source)

    def _resized(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        if index in self._cache:
            return self._cache[index]
        sample = self.source[index]
        item = (*resize_sample(sample.image, sample.boxes, sample.masks, self.size), sample.image_id)
        if self.cache:
            self._cache[index] = item
        return item

    def __getitem__(self, key: tuple[int, bool]) -> TrainItem:
        index, flip = key
        image, boxes, masks, image_id = self._resized(index)
        if flip:
            image = image[:, ::-1]
            masks = masks[:, :, ::-1]
            boxes = boxes.copy()
            boxes[:, [0, 2]] = self.size - boxes[:, [2, 0]]
        return TrainItem(
            image=torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0),
            boxes=torch.from_numpy(np.ascontiguousarray(boxes)),
            masks=torch.from_numpy(np.ascontiguousarray(masks)),
            image_id=image_id,
        )


class SeededBatches(torch.utils.data.Sampler):
    """Batches of ``(index, flip)`` for iterations ``start .. stop-1``.

    Epoch ``e`` visits the samples in the permutation drawn from ``(seed, e)``;
    each position's flip is drawn from ``(seed, e, position)``.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, start: int, stop: int, hflip: bool = True) -> None:
        if num_samples < 1:
            raise ValueError("the training set is empty")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.start = start
        self.stop = stop
        self.hflip = hflip
        self._perms: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)}
        return self._perms[epoch]

    def batch(self, iteration: int) -> list[tuple[int, bool]]:
        """The batch of one iteration."""
        items = []
        for j in range(self.batch_size):
            position = iteration * self.batch_size + j
            epoch, offset = divmod(position, self.num_samples)
            index = int(self._permutation(epoch)[offset])
            flip = self.hflip and bool(np.random.default_rng([self.seed, epoch, offset]).random() < 0.5)
            items.append((index, flip))
        return items

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        for iteration in range(self.start, self.stop):
            yield self.batch(iteration)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def collate(items: list[TrainItem]) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Stack images; targets stay a list of ``{"boxes", "masks"}`` dicts."""
    images = torch.stack([item.image for item in items])
    targets = [{"boxes": item.boxes, "masks": item.masks} for item in items]
    return images, targets
