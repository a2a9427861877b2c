"""The ``cuda`` marker: tests that need a GPU skip where torch sees none."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.cuda
def test_cuda_marked_tests_see_a_device() -> None:
    assert torch.cuda.is_available()
    assert torch.zeros(1, device="cuda").device.type == "cuda"
