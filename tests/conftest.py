"""Shared fixtures: the tiny synthetic world and the real sample data in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` skip (with the reason) where torch sees no CUDA device."""
    if not any(item.get_closest_marker("cuda") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


def _realdata_dir() -> Path:
    override = os.environ.get("WSSS_REALDATA")
    return Path(override) if override else REPO.parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def realdata() -> Path:
    """``../shared/realdata`` (or ``$WSSS_REALDATA``); tests using it skip when it is absent."""
    path = _realdata_dir()
    if not path.is_dir():
        pytest.skip(f"real sample data not found at {path}")
    return path


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic world (seed 0), generated once per test session."""
    from pipeline.datasets.synthetic.preview import contact_sheet
    from pipeline.datasets.synthetic.world import generate_world

    out = tmp_path_factory.mktemp("world") / "tiny"
    generate_world(out, seed=0, scale="tiny", workers=1, progress=False, preview=contact_sheet)
    return out


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight small S4Net checkpoint (tests.helpers.random_s4net_checkpoint), made once per session."""
    from helpers import random_s4net_checkpoint

    return random_s4net_checkpoint(tmp_path_factory.mktemp("ckpt") / "s4net.pt")
