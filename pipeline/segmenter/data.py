"""Image/label pairs for segmenter training, with seeded, resumable augmentation.

Pairs are found from the labels: every ``LABELS/<path>.png`` goes with the image
``IMAGES/<path>.<ext>`` (any image extension). That one rule covers proxy labels
(``OUT/labels`` beside an ImageNet root), the synthetic ground truth
(``imagenet/masks``) and VOC (``SegmentationClass`` beside ``JPEGImages``).

Each iteration's batch (which images, their scale, crop and flip) is a pure
function of ``(seed, iteration)``, so a resumed run sees what an uninterrupted one did.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from pipeline.classes import IGNORE_INDEX
from pipeline.datasets.voc import read_id_list, read_voc_label
from s4net.errors import DatasetError
from s4net.io.images import IMAGE_EXTENSIONS, load_rgb

PAD_RGB = (124, 116, 104)  # the ImageNet mean, zero after normalisation


@dataclass(frozen=True)
class Pair:
    """An image and its label PNG."""

    image: Path
    label: Path


def find_pairs(images: str | os.PathLike, labels: str | os.PathLike,
               ids: str | os.PathLike | None = None) -> list[Pair]:
    """Every label under ``labels`` with its image under ``images`` (sorted; optionally only listed ids).

    ``ids`` is an id list (``ImageSets`` style) of label paths relative to ``labels``
    without ``.png``. A label without an image is an error naming it.
    """
    images, labels = Path(images), Path(labels)
    for folder in (images, labels):
        if not folder.is_dir():
            raise DatasetError(folder, "not a directory")
    found = sorted(labels.rglob("*.png"))
    if ids is not None:
        wanted = read_id_list(ids)
        found = [labels / f"{name}.png" for name in wanted]
        missing = [p for p in found if not p.is_file()]
        if missing:
            raise DatasetError(missing[0], f"listed in {ids} but missing ({len(missing)} missing in all)")
    pairs = []
    for label in found:
        stem = images / label.relative_to(labels).with_suffix("")
        image = next((stem.with_suffix(ext) for ext in _extensions() if stem.with_suffix(ext).is_file()), None)
        if image is None:
            raise DatasetError(label, f"has no image {stem}.<jpg|png|...> under {images}")
        pairs.append(Pair(image, label))
    if not pairs:
        raise DatasetError(labels, "holds no .png labels")
    return pairs


def _extensions() -> list[str]:
    return sorted({*IMAGE_EXTENSIONS, *(e.upper() for e in IMAGE_EXTENSIONS)})


@dataclass(frozen=True)
class Augment:
    """One sample's augmentation: zoom ``scale``, crop at relative offset ``(fx, fy)``, optional flip."""

    scale: float
    fx: float
    fy: float
    flip: bool


class SeededSegBatches(torch.utils.data.Sampler):
    """Batches of ``(index, Augment)`` for iterations ``start .. iterations - 1``.

    Each epoch is a seeded permutation of the images (:meth:`epoch_order`, drawn once per epoch);
    each sample's augmentation is drawn from ``(seed, iteration, slot)``.
    """

    def __init__(self, count: int, batch_size: int, seed: int, start: int, iterations: int,
                 scale: tuple[float, float] = (0.5, 1.5), hflip: bool = True) -> None:
        self.count, self.batch_size, self.seed = count, batch_size, seed
        self.start, self.iterations, self.scale, self.hflip = start, iterations, scale, hflip
        self._order: tuple[int, np.ndarray] | None = None  # the last epoch drawn and its permutation

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The permutation of the images that epoch ``epoch`` visits, from ``(seed, epoch)``; the last one drawn is
        kept (batches go forward, so each epoch's is drawn once)."""
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, 1, epoch]).permutation(self.count))
        return self._order[1]

    def __len__(self) -> int:
        return max(0, self.iterations - self.start)

    def batch(self, iteration: int) -> list[tuple[int, Augment]]:
        """The batch of one iteration."""
        out = []
        for slot in range(self.batch_size):
            position = iteration * self.batch_size + slot
            epoch, offset = divmod(position, self.count)
            index = int(self.epoch_order(epoch)[offset])
            rng = np.random.default_rng([self.seed, 2, iteration, slot])
            low, high = self.scale
            out.append((index, Augment(float(rng.uniform(low, high)), float(rng.random()), float(rng.random()),
                                       bool(self.hflip and rng.random() < 0.5))))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, Augment]]]:
        for iteration in range(self.start, self.iterations):
            yield self.batch(iteration)


def augment(image: np.ndarray, label: np.ndarray, aug: Augment, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """Zoom, pad (image with the mean, label with ignore) and crop to ``crop`` x ``crop``, maybe flip."""
    height, width = label.shape
    size = (max(1, round(width * aug.scale)), max(1, round(height * aug.scale)))
    image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    label = np.asarray(Image.fromarray(label).resize(size, Image.NEAREST))
    pad_h, pad_w = max(0, crop - size[1]), max(0, crop - size[0])
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=0)
        image[size[1]:, :] = PAD_RGB
        image[:, size[0]:] = PAD_RGB
        label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=IGNORE_INDEX)
    y0 = int(aug.fy * (label.shape[0] - crop))
    x0 = int(aug.fx * (label.shape[1] - crop))
    image, label = image[y0 : y0 + crop, x0 : x0 + crop], label[y0 : y0 + crop, x0 : x0 + crop]
    if aug.flip:
        image, label = image[:, ::-1], label[:, ::-1]
    return np.array(image, order="C"), np.array(label, order="C")  # writable copies for torch


class SegmentationPairs(torch.utils.data.Dataset):
    """Indexed by ``(index, Augment)``: (uint8 image Tensor[3, crop, crop], uint8 label Tensor[crop, crop], 255:
    ignore), a quarter and an eighth of float32 and int64 to ship from the loader workers; the trainer converts
    them on its device (:func:`pipeline.segmenter.train.batch_on_device`)."""

    def __init__(self, pairs: Sequence[Pair], crop: int) -> None:
        self.pairs = list(pairs)
        self.crop = crop

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 image [H, W, 3] and label [H, W] of pair ``index`` (same size, checked)."""
        pair = self.pairs[index]
        image, label = load_rgb(pair.image), read_voc_label(pair.label)
        if image.shape[:2] != label.shape:
            raise DatasetError(pair.label, f"is {label.shape[1]}x{label.shape[0]} but {pair.image.name} is "
                                           f"{image.shape[1]}x{image.shape[0]}")
        return image, label

    def __getitem__(self, item: tuple[int, Augment]) -> tuple[torch.Tensor, torch.Tensor]:
        index, aug = item
        image, label = augment(*self.read(index), aug, self.crop)
        return torch.from_numpy(image).permute(2, 0, 1).contiguous(), torch.from_numpy(label)
