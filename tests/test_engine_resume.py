"""Resuming across devices and precisions, and a load that fails for want of memory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from s4net.engine import parameter_groups, restore_training


def _parts() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    optimizer = torch.optim.SGD(parameter_groups(model, 1e-4), lr=0.1, momentum=0.9)
    model(torch.rand(2, 3, 8, 8)).sum().backward()
    optimizer.step()
    return model, optimizer


def _state(model, optimizer, scaler: torch.amp.GradScaler, key: dict) -> dict:
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "iteration": 3, "train": key}


@pytest.mark.parametrize(("saved_enabled", "resumed_enabled"), [(False, True), (True, False)],
                         ids=["float32-to-float16", "float16-to-float32"])
def test_a_scaler_state_moves_between_runs_with_and_without_a_grad_scaler(tmp_path: Path, saved_enabled: bool,
                                                                          resumed_enabled: bool) -> None:
    """A CPU run (no GradScaler: an empty state) resumes under float16 AMP, and the reverse."""
    model, optimizer = _parts()
    # GradScaler(enabled=True) on a machine without CUDA warns and disables itself; build it as CUDA would
    saved = torch.amp.GradScaler("cpu", enabled=saved_enabled, init_scale=1024.0)
    state = _state(model, optimizer, saved, {"lr": 0.1})
    fresh_model, fresh_optimizer = _parts()
    resumed = torch.amp.GradScaler("cpu", enabled=resumed_enabled)
    start = restore_training(state, {"lr": 0.1}, tmp_path / "last.pt", fresh_model, fresh_optimizer, resumed, None)
    assert start == 3
    if resumed_enabled:  # an empty saved state leaves the new scaler at its initial scale
        assert resumed.get_scale() == 65536.0


def test_a_run_resumes_whatever_precision_flags_either_side_was_started_with(tmp_path: Path) -> None:
    """Precision is how a run computes, not what it learns: a key that differs only there still resumes
    (a CPU bf16 run continued on a GPU, or on a host whose CPU resolves ``--cpu-bf16 auto`` otherwise)."""
    model, optimizer = _parts()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    state = _state(model, optimizer, scaler, {"lr": 0.1, "cpu_bf16": True, "amp": True})
    assert restore_training(state, {"lr": 0.1, "amp": False}, tmp_path / "last.pt", *_parts(), scaler, None) == 3
    with pytest.raises(Exception, match="lr: 0.1 -> 0.2"):
        restore_training(state, {"lr": 0.2}, tmp_path / "last.pt", *_parts(), scaler, None)


def test_the_s4net_resume_key_holds_no_cpu_flag(tmp_path: Path) -> None:
    from s4net.train import TrainConfig

    common = dict(annotations="a.json", images="images", out=tmp_path, iterations=2, batch_size=2, lr_steps=(1,))
    cuda = TrainConfig(**common, device="cuda", cpu_bf16=True).resume_key()
    cpu = TrainConfig(**common, device="cpu", cpu_bf16=False).resume_key()
    assert "cpu_bf16" not in cuda
    assert cuda == cpu


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   MemoryError()], ids=["cuda-oom", "host-oom"])
def test_running_out_of_memory_while_loading_is_not_corruption(tmp_path: Path, monkeypatch, error) -> None:
    """The files stay as they are and the error reaches the caller: nothing is renamed, no restart from 0."""
    from s4net.engine.resume import newest_readable_state
    from s4net.io.states import StateFormat, read_state, save_state

    kind = StateFormat("test-state", 1, "test state")
    last, snapshot = tmp_path / "last.pt", tmp_path / "iter_0000002.pt"
    for path in (last, snapshot):
        save_state(path, kind, iteration=2)

    def load(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch, "load", load)
    with pytest.raises(type(error)):
        newest_readable_state([last, snapshot], lambda p: read_state(p, kind))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_0000002.pt", "last.pt"]
