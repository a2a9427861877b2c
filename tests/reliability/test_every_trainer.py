"""The reliability checks of the engine, run for each of the four trainers (in process, a few iterations each).

S4Net, the segmenter, the CAM classifier and the Mask R-CNN peer share one loop
(:func:`s4net.engine.run_training`); each check here runs through every trainer's own task:

* divergence: a NaN loss stops with :class:`TrainingDiverged` naming the iteration, the last good
  checkpoint kept and finite;
* determinism: the same seed twice gives bit-identical weights;
* kill and resume: stopped mid-run and run again, the weights equal the uninterrupted run's;
* safe loading: a ``last.pt`` carrying a pickled payload is set aside unrun and training goes on;
* a damaged ``last.pt`` falls back to the newest snapshot;
* disk full at a checkpoint keeps the previous one and the rerun completes.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable

import pytest
import torch
from helpers import SMALL_S4NET, Payload

from s4net.engine import TrainingDiverged

TRAINERS = ["s4net", "segmenter", "cam", "peer"]
# the peer is the slowest (seconds per iteration): by default only its divergence check runs here, the others (and
# tests/test_maskrcnn_peer.py, its CLI trained, stopped, resumed and scored) with -m slow
QUICK = ["s4net", "segmenter", "cam", pytest.param("peer", marks=pytest.mark.slow)]


def make_runner(name: str, world: Path) -> tuple[Callable[..., Path], type, str]:
    """(train(out, iterations, checkpoint_every, seed) -> final path, the task class, the final file name)."""
    salient, imagenet = world / "salient", world / "imagenet"
    if name in ("s4net", "peer"):
        from s4net.config import S4NetConfig
        from s4net.train import TrainConfig

        def config(out: Path, iterations: int, every: int, seed: int) -> TrainConfig:
            return TrainConfig(annotations=salient / "train.json", images=salient / "images", out=out,
                               iterations=iterations, batch_size=2, lr=0.01, lr_steps=(100,), checkpoint_every=every,
                               keep_snapshots=0, seed=seed, device="cpu", cache=True,
                               model=S4NetConfig(backbone="resnet18", **SMALL_S4NET))

        if name == "s4net":
            from s4net.train import S4NetTask, train

            return (lambda out, iterations, every=1, seed=0: train(config(out, iterations, every, seed), False),
                    S4NetTask, "model_final.pt")
        from s4net.reproduction.maskrcnn_peer import PeerConfig, PeerTask, train_peer

        return (lambda out, iterations, every=1, seed=0: train_peer(config(out, iterations, every, seed),
                                                                     PeerConfig(size=64), every, False),
                PeerTask, "model_final.pt")
    if name == "segmenter":
        from pipeline.segmenter.model import SegmenterConfig
        from pipeline.segmenter.train import SegmenterTask, SegTrainConfig, train_segmenter

        def segmenter(out: Path, iterations: int, every: int = 1, seed: int = 0) -> Path:
            return train_segmenter(SegTrainConfig(images=imagenet, labels=imagenet / "masks", out=out,
                                                  model=SegmenterConfig(encoder="resnet18"), iterations=iterations,
                                                  batch_size=2, crop=48, seed=seed, device="cpu",
                                                  checkpoint_every=every, keep_snapshots=0), progress=False)

        return segmenter, SegmenterTask, "model_final.pt"
    from pipeline.cues.cam import CamConfig, CamTask, train_cam

    def cam(out: Path, iterations: int, every: int = 1, seed: int = 0) -> Path:
        config = CamConfig(backbone="resnet18", size=64, iterations=iterations, batch_size=4, seed=seed)
        return train_cam(imagenet, out, config=config, device="cpu", checkpoint_every=every, progress=False)

    return cam, CamTask, "cam.pt"


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def assert_same(a: Path, b: Path) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def stop_at(monkeypatch, task: type, iteration: int, error: BaseException) -> None:
    """Make ``task.losses`` raise ``error`` when it is called for ``iteration``."""
    real = task.losses

    def losses(self, model, batch, step):
        if step.iteration == iteration:
            raise error
        return real(self, model, batch, step)

    monkeypatch.setattr(task, "losses", losses)


@pytest.fixture(scope="module")
def straight(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory):
    """Each trainer's uninterrupted 4-iteration run (seed 0), made when a test first asks for it."""
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            done[name] = make_runner(name, tiny_world)[0](tmp_path_factory.mktemp(f"straight_{name}"), 4)
        return done[name]

    return get


@pytest.mark.slow  # by default the kill-and-resume test below compares a second run with the first
@pytest.mark.parametrize("name", TRAINERS)
def test_the_same_seed_gives_the_same_weights(tiny_world: Path, tmp_path: Path, straight, name: str) -> None:
    train, _, _ = make_runner(name, tiny_world)
    assert_same(train(tmp_path / "again", 4), straight(name))


@pytest.mark.parametrize("name", QUICK)
def test_killed_mid_run_resumes_to_the_same_weights(tiny_world: Path, tmp_path: Path, straight, monkeypatch,
                                                    name: str) -> None:
    train, task, final = make_runner(name, tiny_world)
    with monkeypatch.context() as patch:
        stop_at(patch, task, 3, KeyboardInterrupt())  # stands in for SIGKILL after the checkpoint at 3
        with pytest.raises(KeyboardInterrupt):
            train(tmp_path, 4)
    assert not (tmp_path / final).exists()
    assert_same(train(tmp_path, 4), straight(name))


@pytest.mark.parametrize("name", TRAINERS)
def test_a_nan_loss_stops_naming_the_iteration_and_keeps_the_last_good_checkpoint(
        tiny_world: Path, tmp_path: Path, monkeypatch, name: str) -> None:
    train, task, final = make_runner(name, tiny_world)
    real = task.losses

    def poisoned(self, model, batch, step):
        losses = real(self, model, batch, step)
        if step.iteration == 2:
            first = next(iter(losses))
            losses[first] = losses[first] * float("nan")
        return losses

    monkeypatch.setattr(task, "losses", poisoned)
    with pytest.raises(TrainingDiverged, match=r"loss is not finite at iteration 2 \(.*nan.*last.pt"):
        train(tmp_path, 4)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert state["iteration"] == 2 and not (tmp_path / final).exists()
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("name", QUICK)
def test_a_hostile_or_damaged_last_checkpoint_is_set_aside_unrun(tiny_world: Path, tmp_path: Path, straight,
                                                                 monkeypatch, name: str) -> None:
    """last.pt replaced by a pickle with a payload: never run, renamed, the newest snapshot (2) takes over."""
    train, task, _ = make_runner(name, tiny_world)
    with monkeypatch.context() as patch:
        stop_at(patch, task, 3, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            train(tmp_path, 4, every=2)
    last = tmp_path / "checkpoints" / "last.pt"
    marker = tmp_path / "payload_ran"
    last.unlink()  # its snapshot iter_2 is a hard link to the same file; unlinking keeps the snapshot intact
    torch.save({"model": Payload(marker)}, last)
    assert_same(train(tmp_path, 4, every=2), straight(name))
    assert not marker.exists(), "the payload ran"
    assert (tmp_path / "checkpoints" / "last.pt.corrupt").exists()


@pytest.mark.parametrize("name", QUICK)
def test_a_full_disk_at_a_checkpoint_keeps_the_previous_one(tiny_world: Path, tmp_path: Path, straight, monkeypatch,
                                                           name: str) -> None:
    train, task, final = make_runner(name, tiny_world)
    real_replace = os.replace
    count = {"n": 0}

    def full_disk_at_last_pt(source, target, *args, **kwargs):
        if str(target).endswith("last.pt"):
            count["n"] += 1
            if count["n"] == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        return real_replace(source, target, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", full_disk_at_last_pt)
        with pytest.raises(OSError, match="No space left"):
            train(tmp_path, 4, every=2)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert state["iteration"] == 2 and not (tmp_path / final).exists()
    assert not list(tmp_path.rglob(".tmp-*"))
    assert_same(train(tmp_path, 4, every=2), straight(name))
