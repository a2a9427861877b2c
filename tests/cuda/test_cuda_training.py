"""Training on a CUDA GPU: S4Net steps in each precision, checkpoints across devices, runs resumed across devices.

Marked ``cuda``: tests/conftest.py skips them where torch sees no GPU. On a GPU machine
``pytest -m cuda tests/cuda`` runs them (so does ``bench/gpu_check.sh``, step ``cuda_tests``).
"""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
from helpers import SMALL_S4NET

pytestmark = pytest.mark.cuda

CUDA = torch.device("cuda")
# name -> (autocast dtype, GradScaler): the engine's Precision for each
PRECISIONS = {"float32": (None, False), "float16": (torch.float16, True), "bfloat16": (torch.bfloat16, False)}


def small_config():
    """The tests' small S4Net (ResNet-18, 64 px, narrow heads)."""
    from s4net.config import S4NetConfig

    return S4NetConfig(backbone="resnet18", **SMALL_S4NET)


def tensors(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside nested dicts, lists and tuples (a checkpoint's payload)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors(item)


def amp_precision_name() -> str:
    """What the engine's AMP computes in on this GPU (bfloat16 where supported, else float16)."""
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


@pytest.mark.parametrize("name", list(PRECISIONS))
def test_s4net_training_steps_keep_losses_and_gradients_finite_in_each_precision(name: str) -> None:
    from bench.train_step import random_batch
    from s4net import build_model
    from s4net.engine import Precision, parameter_groups

    dtype, scaled = PRECISIONS[name]
    if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU does not support bfloat16")
    precision = Precision(dtype, scaled)
    torch.manual_seed(0)
    model = build_model(small_config()).to(CUDA).train()
    initial = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(parameter_groups(model, 1e-4), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=precision.scaler)
    images, targets = random_batch(2, 64, torch.Generator().manual_seed(0))
    images = images.to(CUDA)
    targets = [{k: v.to(CUDA) for k, v in t.items()} for t in targets]
    # float16: GradScaler starts at 2**16 and halves its scale on every step whose gradients overflow (that step
    # is skipped), so it gets more steps to settle
    steps, taken = (16 if scaled else 4), 0
    for _ in range(steps):
        with precision.autocast(CUDA):
            losses = model(images, targets)
        assert losses and all(bool(torch.isfinite(v).all()) for v in losses.values()), losses
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(sum(losses.values())).backward()
        scaler.unscale_(optimizer)
        gradients = [p.grad for p in model.parameters() if p.grad is not None]
        assert gradients
        finite = all(bool(torch.isfinite(g).all()) for g in gradients)
        assert finite or scaled, f"{name}: a gradient is not finite"
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        if scaled:  # a step is skipped exactly when a gradient overflowed
            assert finite == (scaler.get_scale() == scale)
        taken += finite
    assert taken >= 3, f"{name}: only {taken} of {steps} steps had finite gradients"
    assert all(p.dtype == torch.float32 and bool(torch.isfinite(p).all()) for p in model.parameters())
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), initial, strict=True))


@pytest.mark.parametrize(("saved_on", "loaded_on"), [("cuda", "cpu"), ("cpu", "cuda")],
                         ids=["gpu-to-cpu", "cpu-to-gpu"])
def test_an_s4net_checkpoint_loads_and_predicts_on_the_other_device(tmp_path: Path, saved_on: str,
                                                                   loaded_on: str) -> None:
    from s4net import build_model
    from s4net.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = build_model(small_config()).to(saved_on)
    path = tmp_path / "s4net.pt"
    save_checkpoint(path, model)
    payload = read_checkpoint(path, map_location=loaded_on)
    assert {t.device.type for t in tensors(payload["model"])} == {loaded_on}
    loaded = load_checkpoint(path, map_location=loaded_on)
    state = loaded.state_dict()
    for key, value in model.state_dict().items():
        assert state[key].device.type == loaded_on, key
        assert torch.equal(state[key].cpu(), value.cpu()), key
    with torch.inference_mode():
        (detections,) = loaded(torch.rand(1, 3, 64, 64, device=loaded_on))
    assert {detections[key].device.type for key in ("boxes", "scores", "masks")} == {loaded_on}


def s4net_run(world: Path, out: Path, device: str) -> Any:
    """A 4-iteration S4Net training config with a checkpoint every iteration and a metrics line every iteration."""
    from s4net.train import TrainConfig

    salient = world / "salient"
    return TrainConfig(annotations=salient / "train.json", images=salient / "images", out=out, iterations=4,
                       batch_size=2, lr=0.01, lr_steps=(100,), checkpoint_every=1, keep_snapshots=0, log_every=1,
                       seed=0, device=device, amp=True, workers=0, cache=True, model=small_config())


@pytest.mark.parametrize(("first", "then", "fp16"), [("cpu", "cuda", False), ("cpu", "cuda", True),
                                                     ("cuda", "cpu", False)],
                         ids=["cpu-to-gpu-amp", "cpu-to-gpu-float16-gradscaler", "gpu-amp-to-cpu"])
def test_a_run_stopped_on_one_device_resumes_on_the_other(tiny_world: Path, tmp_path: Path, monkeypatch,
                                                          first: str, then: str, fp16: bool) -> None:
    """A run preempted (SIGUSR1, as SLURM sends it) on one device goes on from its last.pt on the other: a CPU
    run (no GradScaler, an empty scaler state) under AMP on the GPU, float16 with an enabled GradScaler included,
    and a GPU run on the CPU. The training last.pt written on one device reads onto the other."""
    import s4net.train as train_module
    from s4net.checkpoint import read_checkpoint
    from s4net.engine import Preempted

    out = tmp_path / "run"
    real_factor = train_module.learning_rate_factor

    def stop_during_iteration_1(iteration: int, cfg: Any) -> float:
        if iteration == 1:
            os.kill(os.getpid(), signal.SIGUSR1)  # the loop finishes this step, saves last.pt and stops
        return real_factor(iteration, cfg)

    monkeypatch.setattr(train_module, "learning_rate_factor", stop_during_iteration_1)
    with pytest.raises(Preempted):
        train_module.train(s4net_run(tiny_world, out, first), progress=False)
    monkeypatch.setattr(train_module, "learning_rate_factor", real_factor)

    last = out / "checkpoints" / "last.pt"
    state = read_checkpoint(last, map_location=then)
    stopped_at = int(state["iteration"])
    assert 1 <= stopped_at < 4
    assert {t.device.type for t in tensors({"model": state["model"], "optimizer": state["optimizer"]})} == {then}

    expected = "float32" if then == "cpu" else "float16" if fp16 else amp_precision_name()
    if fp16:  # what AMP computes in on a GPU without bfloat16: float16 with an enabled GradScaler
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    final = train_module.train(s4net_run(tiny_world, out, then), progress=False)

    assert json.loads((out / "train_config.json").read_text())["precision"] == expected
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2, 3, 4]
    assert all(math.isfinite(line["loss"]) for line in lines)
    resumed = read_checkpoint(final)
    assert resumed["iteration"] == 4
    assert all(bool(torch.isfinite(t).all()) for t in tensors(resumed["model"]) if t.is_floating_point())
    if fp16:  # the resumed run's scaler ran, and its state is saved for the next resume
        assert read_checkpoint(last)["scaler"].get("scale", 0) > 0


def test_the_segmenter_trains_on_the_gpu_with_amp_and_its_checkpoint_loads_on_the_cpu(tiny_world: Path,
                                                                                       tmp_path: Path) -> None:
    from pipeline.segmenter.model import SegmenterConfig, load_segmenter
    from pipeline.segmenter.train import SegTrainConfig, train_segmenter

    imagenet = tiny_world / "imagenet"
    final = train_segmenter(SegTrainConfig(images=imagenet, labels=imagenet / "masks", out=tmp_path / "segmenter",
                                           model=SegmenterConfig(encoder="resnet18"), iterations=3, batch_size=2,
                                           crop=48, seed=0, device="cuda", amp=True, checkpoint_every=1,
                                           keep_snapshots=0, log_every=1), progress=False)
    record = json.loads((tmp_path / "segmenter" / "train_config.json").read_text())
    assert record["precision"] == amp_precision_name()
    lines = [json.loads(line) for line in (tmp_path / "segmenter" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(math.isfinite(line["loss"]) for line in lines)
    model, _ = load_segmenter(final, map_location="cpu")
    with torch.inference_mode():
        logits = model(torch.rand(1, 3, 64, 64))
    assert logits.shape == (1, 21, 64, 64) and bool(torch.isfinite(logits).all())
