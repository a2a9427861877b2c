"""Dropout drawn per sample from (seed, sample position), so a run's masks do not depend on the world size.

``nn.Dropout`` draws one mask for the whole batch from the process's generator: on two ranks
each half of the batch would get other masks than on one process. :class:`SampleDropout`
draws the mask of each sample from its position in the run's sample stream (the engine's
:attr:`~s4net.engine.loop.Step.samples`), so every world size drops the same units.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class SampleDropout(nn.Module):
    """Dropout with probability ``p`` whose per-sample masks come from :meth:`draw_for` (plain dropout before it)."""

    def __init__(self, p: float, layer: int = 0) -> None:
        super().__init__()
        self.p, self.layer = p, layer
        self.seed: int | None = None
        self.samples: tuple[int, ...] = ()

    def draw_for(self, seed: int, samples: Sequence[int]) -> None:
        """The next forward draws the masks of these sample positions."""
        self.seed, self.samples = seed, tuple(samples)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.seed is None or len(self.samples) != x.shape[0]:
            return F.dropout(x, self.p, training=True)
        masks = []
        for sample in self.samples:
            state = np.random.SeedSequence([self.seed, self.layer, sample]).generate_state(1, np.uint64)[0]
            generator = torch.Generator().manual_seed(int(state) & (2**63 - 1))
            masks.append(torch.rand(x.shape[1:], generator=generator) >= self.p)
        keep = torch.stack(masks).to(device=x.device, dtype=x.dtype)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, layer={self.layer}"


def per_sample_dropout(model: nn.Module) -> list[SampleDropout]:
    """Replace every ``nn.Dropout`` of ``model`` by a :class:`SampleDropout` (in place); returns them in order."""
    replaced: list[SampleDropout] = []

    def visit(module: nn.Module) -> None:
        for name, child in module.named_children():
            if type(child) is nn.Dropout:
                swapped = SampleDropout(child.p, layer=len(replaced))
                swapped.train(child.training)
                setattr(module, name, swapped)
                replaced.append(swapped)
            else:
                visit(child)

    visit(model)
    return replaced
