"""SIGKILL the long jobs at random points (one seed per point), rerun them, and compare with an uninterrupted run.

Each job runs as its own process group, is killed once a seeded number of progress lines has
appeared, and is then run again with the same command. Training must end with identical
weights (CPU, fixed seed), proxy labels with identical checksums; no temporary file survives.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import SMALL_S4NET, proxy_label_args

BIN = Path(sys.executable).parent
# one kill point in the default suite, two more with -m slow
SEEDS = [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)]
# the trainers' SIGKILL through the CLI: with -m slow (by default every trainer is stopped and resumed in process,
# tests/reliability/test_every_trainer.py, and a 2-rank run is SIGKILLed, tests/test_distributed_training.py)
TRAINING_SEEDS = [pytest.param(seed, marks=pytest.mark.slow) for seed in (0, 1, 2)]


def trained_straight(command, tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """The final weights of an uninterrupted run of ``command(out)`` (the reference a killed run must match)."""
    out = tmp_path_factory.mktemp(name)
    run(command(out))
    return out / "model_final.pt"


def run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def kill_after(command: list[str], progress: Path, lines: int, timeout: float = 180) -> int:
    """Start ``command``; SIGKILL its process group once ``progress`` has ``lines`` lines. Returns the lines seen."""
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    seen = 0
    try:
        while time.time() < deadline and process.poll() is None:
            seen = len(progress.read_text().splitlines()) if progress.exists() else 0
            if seen >= lines:
                os.killpg(process.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return seen


def kill_then_finish(command: list[str], out: Path, progress: str, iterations: int, seed: int) -> None:
    """Kill a training run after a seeded number of its metrics lines, check it stopped midway, run it again."""
    lines = int(np.random.default_rng(seed).integers(1, iterations))
    seen = kill_after(command, out / progress, lines)
    assert seen >= lines and not (out / "model_final.pt").exists(), "the run was not killed midway"
    run(command)


def weights(path: Path) -> dict[str, torch.Tensor]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return payload["model"]


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def no_temporaries(folder: Path) -> None:
    assert not [p for p in folder.rglob(".tmp-*")], "a temporary file survived"


@pytest.fixture(scope="module")
def s4net_command(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory):
    config = tmp_path_factory.mktemp("cfg") / "small.yaml"
    config.write_text(yaml.safe_dump({"backbone": "resnet18", **{k: list(v) if isinstance(v, tuple) else v
                                                                  for k, v in SMALL_S4NET.items()
                                                                  if k != "image_size"}}))
    salient = tiny_world / "salient"

    def command(out: Path) -> list[str]:
        return [str(BIN / "s4net"), "train", "--annotations", str(salient / "train.json"), "--images",
                str(salient / "images"), "--out", str(out), "--model-config", str(config), "--size", "64",
                "--iterations", "10", "--batch-size", "2", "--lr", "0.01", "--lr-steps", "7", "--warmup", "2",
                "--checkpoint-every", "2", "--log-every", "1", "--seed", "3", "--device", "cpu", "--cpu-bf16", "off",
                "--scale-jitter", "0.8", "1.2", "-q"]

    return command


@pytest.fixture(scope="module")
def s4net_straight(s4net_command, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_straight(s4net_command, tmp_path_factory, "s4net_straight")


@pytest.mark.parametrize("seed", TRAINING_SEEDS)
def test_s4net_train_killed_anywhere_resumes_to_the_same_weights(s4net_command, s4net_straight: Path, tmp_path: Path,
                                                                seed: int) -> None:
    kill_then_finish(s4net_command(tmp_path), tmp_path, "metrics.jsonl", 10, seed)
    assert_same_weights(tmp_path / "model_final.pt", s4net_straight)
    logged = [json.loads(line)["iteration"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 11))  # the lines of the killed run past its checkpoint were dropped
    no_temporaries(tmp_path)


@pytest.fixture(scope="module")
def segmenter_command(tiny_world: Path):
    imagenet = tiny_world / "imagenet"

    def command(out: Path) -> list[str]:
        return [str(BIN / "wsss"), "train-segmenter", "--images", str(imagenet), "--labels", str(imagenet / "masks"),
                "--out", str(out), "--encoder", "resnet18", "--iterations", "8", "--batch-size", "2", "--crop", "48",
                "--checkpoint-every", "2", "--log-every", "1", "--seed", "5", "--device", "cpu", "-q"]

    return command


@pytest.fixture(scope="module")
def segmenter_straight(segmenter_command, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_straight(segmenter_command, tmp_path_factory, "segmenter_straight")


@pytest.mark.parametrize("seed", TRAINING_SEEDS)
def test_segmenter_training_killed_anywhere_resumes_to_the_same_weights(segmenter_command, segmenter_straight: Path,
                                                                        tmp_path: Path, seed: int) -> None:
    kill_then_finish(segmenter_command(tmp_path), tmp_path, "metrics.jsonl", 8, seed)
    assert_same_weights(tmp_path / "model_final.pt", segmenter_straight)
    no_temporaries(tmp_path)


def proxy_command(checkpoint: Path, world: Path, out: Path) -> list[str]:
    return [str(BIN / "wsss"), *proxy_label_args(checkpoint, world, out, batch_size=1)]


@pytest.fixture(scope="module")
def proxy_straight(checkpoint: Path, tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from pipeline.proxy_labels.manifest import read_manifests

    out = tmp_path_factory.mktemp("proxy_straight")
    run(proxy_command(checkpoint, tiny_world, out))
    return {image: record["sha256"] for image, record in read_manifests(out).items()}


@pytest.mark.parametrize("seed", SEEDS)
def test_proxy_labels_killed_anywhere_resume_to_the_same_labels(checkpoint: Path, tiny_world: Path, tmp_path: Path,
                                                                proxy_straight: dict[str, str], seed: int) -> None:
    from pipeline.proxy_labels.manifest import read_manifests

    lines = int(np.random.default_rng(seed).integers(1, 39))
    seen = kill_after(proxy_command(checkpoint, tiny_world, tmp_path), tmp_path / "manifest.jsonl", lines)
    assert lines <= seen < 40, "the run was not killed midway"
    run(proxy_command(checkpoint, tiny_world, tmp_path))
    assert {image: record["sha256"] for image, record in read_manifests(tmp_path).items()} == proxy_straight
    no_temporaries(tmp_path)


def test_stale_partial_outputs_of_an_old_crash_are_detected_and_redone(checkpoint: Path, tiny_world: Path,
                                                                       tmp_path: Path,
                                                                       proxy_straight: dict[str, str]) -> None:
    """A label truncated under its final name, a torn manifest line and a dead writer's temporary file."""
    from pipeline.proxy_labels.manifest import read_manifests

    run(proxy_command(checkpoint, tiny_world, tmp_path))
    manifest = tmp_path / "manifest.jsonl"
    first = next(iter(read_manifests(tmp_path).values()))
    label = tmp_path / "labels" / first["label"]
    label.write_bytes(label.read_bytes()[: label.stat().st_size // 2])  # e.g. copied back from a broken backup
    with open(manifest, "a") as handle:
        handle.write('{"image": "train/n0')  # a line torn by a crash
    import socket

    stale = tmp_path / "labels" / f".tmp-{socket.gethostname()}-999999999-x.png"  # a pid no process has
    stale.write_bytes(b"\x89PNG half")
    run(proxy_command(checkpoint, tiny_world, tmp_path))
    assert {image: record["sha256"] for image, record in read_manifests(tmp_path).items()} == proxy_straight
    assert not stale.exists()
