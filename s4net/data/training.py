"""Training batches: resized samples, flips, scale jitter and a resumable, seeded order.

The order of samples, the flips and the zooms are pure functions of ``(seed,
iteration)``, so a run resumed at iteration k sees exactly the batches the
uninterrupted run saw.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from s4net.data.coco import SalientInstanceDataset

log = logging.getLogger(__name__)

MIN_INSTANCE_PIXELS = 16  # an instance cropped to fewer visible pixels is dropped
PAD_VALUE = (0.485, 0.456, 0.406)  # ImageNet mean: zero after normalisation


@dataclass(frozen=True)
class Zoom:
    """A scale jitter: resize by ``scale``, then crop (or pad) at relative offset ``(fx, fy)`` in [0, 1]."""

    scale: float
    fx: float
    fy: float


def zoom_sample(image: torch.Tensor, masks: torch.Tensor,
                zoom: Zoom) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply a :class:`Zoom` to an image [3, S, S] and its soft masks [N, S, S]; the size stays S.

    Returns (image, boxes [M, 4], masks [M, S, S]); boxes are recomputed from the
    zoomed masks and instances left with fewer than ``MIN_INSTANCE_PIXELS``
    visible pixels are dropped.
    """
    size = image.shape[-1]
    side = max(8, int(round(size * zoom.scale)))
    stack = torch.cat([image, masks]) if masks.shape[0] else image
    stack = F.interpolate(stack[None], size=(side, side), mode="bilinear", align_corners=False)[0]
    if side >= size:
        x0, y0 = int(zoom.fx * (side - size)), int(zoom.fy * (side - size))
        out = stack[:, y0 : y0 + size, x0 : x0 + size]
    else:
        x0, y0 = int(zoom.fx * (size - side)), int(zoom.fy * (size - side))
        out = torch.zeros((stack.shape[0], size, size), dtype=stack.dtype)
        out[:3] = torch.tensor(PAD_VALUE, dtype=stack.dtype)[:, None, None]
        out[:, y0 : y0 + side, x0 : x0 + side] = stack
    image, masks = out[:3].contiguous(), out[3:].clamp(0.0, 1.0)
    visible = masks > 0.5
    keep = visible.flatten(1).sum(1) >= MIN_INSTANCE_PIXELS
    masks, visible = masks[keep].contiguous(), visible[keep]
    boxes = torch.zeros((masks.shape[0], 4), dtype=torch.float32)
    if masks.shape[0]:
        cols, rows = visible.any(1), visible.any(2)  # [M, S] each
        index = torch.arange(size, dtype=torch.float32)
        boxes[:, 0] = torch.where(cols, index, float(size)).amin(1)
        boxes[:, 2] = torch.where(cols, index, -1.0).amax(1) + 1
        boxes[:, 1] = torch.where(rows, index, float(size)).amin(1)
        boxes[:, 3] = torch.where(rows, index, -1.0).amax(1) + 1
    return image, boxes, masks


@dataclass(frozen=True)
class TrainItem:
    """One training image at the network's input size.

    Attributes:
        image: uint8 Tensor[3, S, S], or float32 in [0, 1] after a zoom (:func:`device_images` scales
            either kind on the device, so loader workers ship a quarter of the bytes when nothing zooms).
        boxes: Tensor[N, 4] (x1, y1, x2, y2) at size S.
        masks: float32 Tensor[N, S, S] (bilinear-resized, soft at edges).
        image_id: COCO image id.
    """

    image: torch.Tensor
    boxes: torch.Tensor
    masks: torch.Tensor
    image_id: int


def resize_sample(image: np.ndarray, boxes: np.ndarray, masks: np.ndarray,
                  size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resize an image (uint8 [H, W, 3]), its boxes and masks to ``size`` x ``size`` (aspect not kept)."""
    height, width = image.shape[:2]
    resized = np.array(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    scale = np.array([size / width, size / height, size / width, size / height], dtype=np.float32)
    out_masks = np.stack(
        [np.asarray(Image.fromarray(m.astype(np.float32)).resize((size, size), Image.BILINEAR)) for m in masks]
    ) if len(masks) else np.zeros((0, size, size), dtype=np.float32)
    return resized, boxes.astype(np.float32) * scale, np.clip(out_masks, 0.0, 1.0).astype(np.float32)


class TrainingSet(torch.utils.data.Dataset):
    """Indexes ``(sample_index, flip, zoom)`` into resized, optionally flipped and zoomed training items.

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

    def __getitem__(self, key: tuple[int, bool, Zoom | None]) -> TrainItem:
        index, flip, zoom = key
        image, boxes, masks, image_id = self._resized(index)
        if flip:
            image = image[:, ::-1]
            masks = masks[:, :, ::-1]
            boxes = boxes.copy()
            boxes[:, [0, 2]] = self.size - boxes[:, [2, 0]]
        image_t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        boxes_t = torch.from_numpy(np.ascontiguousarray(boxes))
        masks_t = torch.from_numpy(np.ascontiguousarray(masks))
        if zoom is not None:  # resampling works in float
            image_t, boxes_t, masks_t = zoom_sample(image_t.float().div_(255.0), masks_t, zoom)
        return TrainItem(image=image_t, boxes=boxes_t, masks=masks_t, image_id=image_id)


class SeededBatches(torch.utils.data.Sampler):
    """Batches of ``(index, flip, zoom)`` for iterations ``start .. stop-1``.

    Epoch ``e`` visits the samples in the permutation drawn from ``(seed, e)``;
    each position's flip and zoom are drawn from ``(seed, e, position)``.
    ``scale_jitter`` (lo, hi) draws the zoom's scale uniformly; None: no zoom.
    """

    def __init__(
        self, num_samples: int, batch_size: int, seed: int, start: int, stop: int, hflip: bool = True,
        scale_jitter: tuple[float, float] | None = None,
    ) -> None:
        if num_samples < 1:
            raise ValueError("the training set is empty")
        self.scale_jitter = scale_jitter
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

    def batch(self, iteration: int) -> list[tuple[int, bool, Zoom | None]]:
        """The batch of one iteration."""
        items = []
        for j in range(self.batch_size):
            position = iteration * self.batch_size + j
            epoch, offset = divmod(position, self.num_samples)
            index = int(self._permutation(epoch)[offset])
            rng = np.random.default_rng([self.seed, epoch, offset])
            flip = self.hflip and bool(rng.random() < 0.5)
            zoom = None
            if self.scale_jitter is not None:
                lo, hi = self.scale_jitter
                zoom = Zoom(float(rng.uniform(lo, hi)), float(rng.random()), float(rng.random()))
            items.append((index, flip, zoom))
        return items

    def __iter__(self) -> Iterator[list[tuple[int, bool, Zoom | None]]]:
        for iteration in range(self.start, self.stop):
            yield self.batch(iteration)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def device_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A collated image batch on ``device`` as float in [0, 1] (uint8 batches are scaled there)."""
    images = images.to(device, non_blocking=True)
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def collate(items: list[TrainItem]) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Stack images (uint8 when all are, else float in [0, 1]); targets stay a list of ``{"boxes", "masks"}``."""
    if all(item.image.dtype == torch.uint8 for item in items):
        images = torch.stack([item.image for item in items])
    else:
        images = torch.stack([item.image.float().div(255.0) if item.image.dtype == torch.uint8 else item.image
                              for item in items])
    targets = [{"boxes": item.boxes, "masks": item.masks} for item in items]
    return images, targets
