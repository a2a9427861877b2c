"""The engine's step loop on a toy task: how often it waits for the host, and its background checkpoints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from s4net.engine import LoopSettings, Step, TrainingDiverged, run_training
from s4net.io.states import StateFormat, read_state, save_state

TOY = StateFormat("toy-state", 1, "toy state")


class ToyTask:
    """Least squares on fixed random points; ``poison_at`` makes that iteration's loss NaN."""

    def __init__(self, iterations: int, poison_at: int | None = None) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(64, 4, generator=generator)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1
        self.iterations, self.poison_at = iterations, poison_at

    def build_model(self) -> nn.Module:
        return nn.Linear(4, 1)

    def dataset(self) -> torch.utils.data.Dataset:
        return torch.utils.data.TensorDataset(self.x, self.y)

    def batches(self, start: int) -> list[list[int]]:
        return [[(8 * i + j) % 64 for j in range(8)] for i in range(start, self.iterations)]

    def collate(self, items: list[Any]) -> Any:
        return torch.utils.data.default_collate(items)

    def lr_factor(self, iteration: int) -> float:
        return 1.0

    def losses(self, model: nn.Module, batch: Any, step: Step) -> dict[str, torch.Tensor]:
        x, y = batch
        loss = ((model(x)[:, 0] - y) ** 2).mean()
        if step.iteration == self.poison_at:
            loss = loss * float("nan")
        return {"loss": loss}

    def resume_key(self) -> dict[str, Any]:
        return {"iterations": self.iterations}

    def record(self) -> dict[str, Any]:
        return {}

    def save(self, path: Path, model: nn.Module, **state: Any) -> None:
        save_state(path, TOY, model=model.state_dict(), **state)

    def read(self, path: Path, map_location: torch.device | str) -> dict[str, Any]:
        return read_state(path, TOY, map_location)

    def finish(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        return {}


def _settings(out: Path, iterations: int, **changes: Any) -> LoopSettings:
    values = dict(out=out, final_name="model.pt", iterations=iterations, batch_size=8, lr=0.05, device="cpu",
                  checkpoint_every=2, keep_snapshots=0, log_every=5, progress=False)
    return LoopSettings(**{**values, **changes})


def test_the_host_reads_losses_back_only_at_sync_points(tmp_path: Path, monkeypatch) -> None:
    """Ten steps logged every five, checkpointed every five: two exchanges, not ten."""
    import s4net.engine.loop as loop

    calls = []
    real = loop.all_ranks_sum
    monkeypatch.setattr(loop, "all_ranks_sum", lambda tensor, *a, **k: calls.append(tensor.numel()) or real(tensor))
    run_training(ToyTask(10), _settings(tmp_path, 10, checkpoint_every=5))
    assert calls == [5 + 1, 5 + 1]  # five steps' losses and the stop flag, twice
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2


def test_a_non_finite_loss_is_named_by_its_iteration_and_never_checkpointed(tmp_path: Path) -> None:
    """Iteration 2's loss is NaN; it is found at the sync point after iteration 4 (the checkpoint at 4 is not
    written, since its weights are spoilt) and the message names iteration 2."""
    with pytest.raises(TrainingDiverged, match="not finite at iteration 2 .*last good checkpoint: .*last.pt"):
        run_training(ToyTask(10, poison_at=2), _settings(tmp_path, 10, checkpoint_every=2, log_every=100))
    state = read_state(tmp_path / "checkpoints" / "last.pt", TOY)
    assert state["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_background_checkpoints_hold_the_state_of_their_own_iteration(tmp_path: Path) -> None:
    """The snapshot at 2 of a 6-iteration run is the final state of a 2-iteration run, though training
    went on while it was being written."""
    run_training(ToyTask(6), _settings(tmp_path / "long", 6))
    run_training(ToyTask(2), _settings(tmp_path / "short", 2))
    snapshot = read_state(tmp_path / "long" / "checkpoints" / "iter_0000002.pt", TOY)
    final = read_state(tmp_path / "short" / "model.pt", TOY)
    assert snapshot["iteration"] == 2
    for name, value in final["model"].items():
        assert torch.equal(snapshot["model"][name], value), name
    assert not torch.equal(snapshot["model"]["weight"],
                           read_state(tmp_path / "long" / "model.pt", TOY)["model"]["weight"])


def test_a_failed_background_write_stops_the_run(tmp_path: Path, monkeypatch) -> None:
    """A write that fails (a full disk) is raised, not lost in its thread."""
    task = ToyTask(6)

    def full(path, model, **state):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(task, "save", full)
    with pytest.raises(OSError, match="No space left"):
        run_training(task, _settings(tmp_path, 6))


def test_loader_workers_default_to_none_on_cpu_and_a_share_of_the_cores_on_cuda(monkeypatch) -> None:
    from s4net.engine.distributed import World
    from s4net.engine.loop import loader_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert loader_workers(None, cpu, World()) == 0
    assert loader_workers(None, cuda, World(0, 2, 0)) == 7  # 16 cores over 2 ranks, one each for the rank
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert loader_workers(None, cuda, World(0, 8, 0)) == 1
    assert loader_workers(3, cuda, World()) == 3


class ConvTask(ToyTask):
    """The toy as a 3x3 convolution over 3x3 maps, to see the memory format the engine gives a conv net."""

    seen: list[bool] = []

    def build_model(self) -> nn.Module:
        return nn.Conv2d(4, 3, 3, padding=1)

    def losses(self, model: nn.Module, batch: Any, step: Step) -> dict[str, torch.Tensor]:
        x, y = batch
        out = model(x[:, :, None, None].expand(-1, -1, 3, 3).contiguous())
        return {"loss": ((out.mean((1, 2, 3)) - y) ** 2).mean()}

    def finish(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        self.seen.append(model.weight.is_contiguous(memory_format=torch.channels_last)
                         and not model.weight.is_contiguous())
        return {}


@pytest.mark.parametrize("channels_last, cpu_bf16, expected", [
    (True, False, True), (None, False, False), (None, True, True), (False, True, False),
], ids=["asked", "default-cpu-fp32", "default-cpu-bf16", "refused-cpu-bf16"])
def test_channels_last_weights_when_asked_and_by_default_on_cuda_and_under_cpu_bf16(
        tmp_path: Path, channels_last, cpu_bf16, expected) -> None:
    task = ConvTask(2)
    task.seen = []
    run_training(task, _settings(tmp_path, 2, channels_last=channels_last, cpu_bf16=cpu_bf16))
    assert task.seen == [expected]


@pytest.mark.slow
def test_a_compiled_model_trains_to_the_eager_weights(tmp_path: Path) -> None:
    """torch.compile (inductor, C++ on CPU) changes how the steps run, not what they compute."""
    run_training(ToyTask(4), _settings(tmp_path / "eager", 4))
    run_training(ToyTask(4), _settings(tmp_path / "compiled", 4, compile=True))
    eager = read_state(tmp_path / "eager" / "model.pt", TOY)["model"]
    compiled = read_state(tmp_path / "compiled" / "model.pt", TOY)["model"]
    for name, value in eager.items():
        torch.testing.assert_close(compiled[name], value, rtol=1e-5, atol=1e-6)


def test_deterministic_runs_get_deterministic_cublas_workspaces(monkeypatch) -> None:
    """Without CUBLAS_WORKSPACE_CONFIG torch's deterministic mode refuses every CUDA matrix product."""
    from s4net.engine.devices import CUBLAS_WORKSPACE, deterministic_algorithms

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    with deterministic_algorithms(False):
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    with deterministic_algorithms(True):
        assert torch.are_deterministic_algorithms_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # a user's own choice stays
    with deterministic_algorithms(True):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_cudnn_autotuning_is_set_inside_the_block_and_restored_after() -> None:
    from s4net.engine.devices import cudnn_autotuning

    saved = torch.backends.cudnn.benchmark
    try:
        for outer in (False, True):
            torch.backends.cudnn.benchmark = outer
            for inner in (False, True):
                with cudnn_autotuning(inner):
                    assert torch.backends.cudnn.benchmark is inner
                assert torch.backends.cudnn.benchmark is outer
    finally:
        torch.backends.cudnn.benchmark = saved
