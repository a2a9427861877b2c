"""S4Net inference under autocast, on boxes the caller fixes, with a minimum score, whatever the window grouping."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import SMALL_S4NET

import s4net
from s4net.config import S4NetConfig
from s4net.models import S4Net


def busy_model(size: int = 96) -> S4Net:
    """A small random S4Net whose branch has spread weights and biases far from zero (so its masks vary and its
    background is not all zeros), with a map large enough for windows smaller than the map; ready for inference."""
    torch.manual_seed(0)
    model = s4net.build_model(S4NetConfig(backbone="resnet18", **{**SMALL_S4NET, "image_size": size}))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.branch.logits.weight.normal_(0, 0.05, generator=generator)
        for name, p in model.branch.named_parameters():
            if name.endswith("bias"):
                p.add_(torch.randn(p.shape, generator=generator) * 0.2)
    return model.for_inference()


@pytest.fixture(scope="module")
def images() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.rand(3, 96, 96, generator=generator), torch.rand(3, 72, 120, generator=generator)]


def test_predict_under_cpu_bfloat16_autocast_is_float32_and_close_to_float32(images: list[torch.Tensor]) -> None:
    model = busy_model()
    untouched = copy.deepcopy(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # first, so any state it leaves meets the float32 runs
        low = model.predict(images)
    reference = model.predict(images)
    fresh = untouched.predict(images)
    for out, ref, clean in zip(low, reference, fresh, strict=True):
        assert {k: v.dtype for k, v in out.items()} == dict.fromkeys(("boxes", "scores", "masks"), torch.float32)
        assert out["masks"].shape[1:] == ref["masks"].shape[1:]
        assert all(torch.isfinite(v).all() for v in out.values())
        # the low-precision run leaves nothing behind (the branch's background cache) that changes float32 runs
        assert all(torch.equal(ref[k], clean[k]) for k in ref)
    boxes = [ref["boxes"] for ref in reference]
    assert sum(len(b) for b in boxes) > 0
    exact = model.masks_for_boxes(images, boxes)
    for masks, ref in zip(exact, reference, strict=True):  # the same branch and paste as predict
        assert masks.dtype == torch.float32
        torch.testing.assert_close(masks, ref["masks"], rtol=0, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        approx = model.masks_for_boxes(images, boxes)
    for a, b in zip(approx, exact, strict=True):
        assert a.dtype == torch.float32
        assert (a - b).abs().max() < 0.05 and (a - b).abs().mean() < 0.01
