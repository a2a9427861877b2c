"""S4Net inference on CUDA: the same masks as on CPU, exact branch windows, autocast, the CLI's cuDNN settings.

Skipped where torch sees no CUDA device (the ``cuda`` marker); ``bench/gpu_check.sh`` runs them on a GPU.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from test_inference_precision import busy_model, fixed_boxes, grouped_like_whole_map, mixed_boxes

from s4net.models import S4Net

pytestmark = pytest.mark.cuda


@pytest.fixture()
def float32_math() -> Iterator[None]:
    """Full float32 convolutions and matmuls (no TF32), so CPU and GPU are compared at float32's precision."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture(scope="module")
def images() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.rand(3, 96, 96, generator=generator), torch.rand(3, 72, 120, generator=generator)]


def on_cuda(model: S4Net) -> S4Net:
    """A copy of ``model`` (the same weights) on the GPU."""
    return copy.deepcopy(model).to("cuda")


def test_masks_on_fixed_boxes_match_between_cpu_and_gpu(images: list[torch.Tensor], float32_math: None) -> None:
    model = busy_model()
    boxes = fixed_boxes(images)
    cpu = model.masks_for_boxes(images, boxes)
    gpu = on_cuda(model).masks_for_boxes([im.cuda() for im in images], [b.cuda() for b in boxes])
    for a, b in zip(gpu, cpu, strict=True):
        assert a.device.type == "cuda" and a.dtype == torch.float32 and a.shape == b.shape
        torch.testing.assert_close(a.cpu(), b, rtol=0, atol=5e-4)
    assert max(float(m.max()) for m in cpu) > 0.5  # masks that vary, not all zero


def test_exact_branch_windows_equal_the_whole_map_on_cuda(float32_math: None) -> None:
    model = on_cuda(busy_model())
    generator = torch.Generator().manual_seed(2)
    features = torch.relu(torch.randn(2, model.config.compress_channels, 40, 40, generator=generator)).cuda()
    boxes = mixed_boxes(24, 320, seed=3).cuda()
    index = (torch.arange(24) % 2).cuda()
    with torch.inference_mode():
        calls = grouped_like_whole_map(model, features, boxes, index, rtol=1e-4, atol=1e-4)
    assert calls["single"] == 1 and calls["auto"] == calls["single"] and calls["cost"] > 1


DTYPES = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float16", "bfloat16"])
def test_predict_under_cuda_autocast_is_finite_float32(images: list[torch.Tensor], dtype: torch.dtype) -> None:
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    model = on_cuda(busy_model())
    gpu_images = [im.cuda() for im in images]
    with torch.autocast("cuda", dtype=dtype):
        low = model.predict(gpu_images)
    for out, image in zip(low, images, strict=True):
        assert {k: v.dtype for k, v in out.items()} == dict.fromkeys(("boxes", "scores", "masks"), torch.float32)
        assert out["masks"].shape[1:] == (1, *image.shape[-2:]) and len(out["boxes"]) > 0
        assert all(bool(torch.isfinite(v).all()) for v in out.values())
    boxes = [b.cuda() for b in fixed_boxes(images)]
    exact = model.masks_for_boxes(gpu_images, boxes)
    with torch.autocast("cuda", dtype=dtype):
        approx = model.masks_for_boxes(gpu_images, boxes)
    for a, b in zip(approx, exact, strict=True):
        assert a.dtype == torch.float32
        assert (a - b).abs().max() < 0.05 and (a - b).abs().mean() < 0.01


@pytest.mark.parametrize("deterministic", [False, True], ids=["default", "deterministic"])
def test_predict_cli_on_cuda_autotunes_unless_deterministic(checkpoint: Path, tmp_path: Path,
                                                           deterministic: bool) -> None:
    from s4net.cli import main as s4net_main
    from s4net.io.images import save_image

    save_image(tmp_path / "images" / "a.png", np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8))
    saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    try:
        torch.backends.cudnn.benchmark = deterministic  # the opposite of what the run must leave
        argv = ["predict", "--checkpoint", str(checkpoint), "--images", str(tmp_path / "images"), "--out",
                str(tmp_path / "out"), "--device", "cuda", "-q"] + (["--deterministic"] if deterministic else [])
        assert s4net_main(argv) == 0
        assert torch.backends.cudnn.benchmark is not deterministic
        assert torch.backends.cudnn.deterministic is deterministic
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved
    assert (tmp_path / "out" / "results.json").is_file()
