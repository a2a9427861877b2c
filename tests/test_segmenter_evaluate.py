"""``wsss evaluate`` test-time augmentation and ``wsss score``, with a per-pixel model whose right answer is known.

The model is a 1x1 convolution: each pixel's logits are minus its squared distance (in the
ImageNet-normalised colour space the segmenter sees) to one colour per class, so a flat
block of a class's colour is that class, whatever the flip, scale or padding around it.
Image sizes are deliberately not multiples of the output stride (16).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.segmenter.evaluate import STRIDE, predict_probabilities
from s4net.models.backbones import IMAGENET_MEAN, IMAGENET_STD

# class index -> RGB of its blocks; every other class is never predicted
COLOURS = {0: (20, 20, 20), 1: (230, 30, 30), 2: (30, 200, 40), 15: (40, 60, 220)}


class NearestColour(nn.Module):
    """Logits[N, 21, H, W] = -sharpness * |x - colour_k|^2 (up to a per-pixel constant) on the normalised image.

    Refuses inputs whose sides are not multiples of :data:`STRIDE`, as DeepLab's
    stride-16 features would misalign them.
    """

    def __init__(self, sharpness: float = 4.0, classes: int = 21) -> None:
        super().__init__()
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self.conv = nn.Conv2d(3, classes, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.fill_(-1e4)
            for index, rgb in COLOURS.items():
                centre = (torch.tensor(rgb, dtype=torch.float32) / 255.0 - mean) / std
                self.conv.weight[index, :, 0, 0] = 2 * sharpness * centre
                self.conv.bias[index] = -sharpness * centre.square().sum()

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[-2] % STRIDE or batch.shape[-1] % STRIDE:
            raise ValueError(f"input {tuple(batch.shape[-2:])} is not padded to a multiple of {STRIDE}")
        return self.conv(batch)


def blocks(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8[H, W, 3] image and uint8[H, W] label: four flat, left-right asymmetric blocks."""
    label = np.zeros((height, width), dtype=np.uint8)
    label[:, : width // 5] = 1
    label[: height // 2, width // 5: (3 * width) // 5] = 2
    label[height // 2:, (4 * width) // 5:] = 15
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index, rgb in COLOURS.items():
        palette[index] = rgb
    return palette[label], label


@pytest.mark.parametrize("height, width", [(37, 53), (20, 500), (45, 77), (33, 100)])
def test_flip_is_aligned_for_every_size(height: int, width: int) -> None:
    image, label = blocks(height, width)
    model = NearestColour().eval()
    plain = predict_probabilities(model, image, torch.device("cpu"))
    flipped = predict_probabilities(model, image, torch.device("cpu"), flip=True)
    assert (plain.argmax(0) == label).all()  # the model is right on every pixel
    # a per-pixel model does not care about flips: averaging with the flipped view changes nothing
    worst = np.abs(flipped - plain).max(axis=0)
    assert worst.max() <= 1e-5, (
        f"{width}x{height} (padding {(-width) % STRIDE} columns): flip moves probabilities by up to "
        f"{worst.max():.3f}, in columns {np.flatnonzero(worst.max(axis=0) > 1e-5).tolist()}")
    assert (flipped.argmax(0) == label).all()
