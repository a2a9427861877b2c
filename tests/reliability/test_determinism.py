"""Same seed, same machine: byte-identical proxy labels, weights and metrics; ``--deterministic`` switches
torch's on."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import LOOSE_CUES

BIN = Path(sys.executable).parent


def digest_tree(folder: Path, pattern: str) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob(pattern))}


def run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def pipeline_run(checkpoint: Path, world: Path, out: Path, seed: int) -> dict[str, object]:
    """Proxy labels (with CRF), a short segmenter on them, its VOC-val scores: everything a seed decides."""
    imagenet = world / "imagenet"
    run([str(BIN / "wsss"), "proxy-labels", "--checkpoint", str(checkpoint), "--images", str(imagenet), "--keywords",
         str(imagenet / "keywords.csv"), "--out", str(out / "proxy"), "--crf", "--workers", "2",
         "-q", *LOOSE_CUES])
    run([str(BIN / "wsss"), "train-segmenter", "--images", str(imagenet), "--labels", str(out / "proxy" / "labels"),
         "--out", str(out / "seg"), "--encoder", "resnet18", "--iterations", "4", "--batch-size", "2", "--crop", "48",
         "--seed", str(seed), "--device", "cpu", "--deterministic", "-q"])
    run([str(BIN / "wsss"), "evaluate", "--checkpoint", str(out / "seg" / "model_final.pt"), "--voc-root",
         str(world / "voc" / "VOC2012"), "--out", str(out / "val.json"), "-q"])
    metrics = json.loads((out / "val.json").read_text())
    weights = torch.load(out / "seg" / "model_final.pt", map_location="cpu", weights_only=True)["model"]
    return {"labels": digest_tree(out / "proxy" / "labels", "*.png"),
            "weights": {k: hashlib.sha256(v.numpy().tobytes()).hexdigest() for k, v in weights.items()},
            "metrics": {k: metrics[k] for k in ("mIoU", "per_class_iou", "confusion")}}


@pytest.mark.slow  # 2-3 minutes; the engine's own determinism runs by default (test_every_trainer.py)
def test_the_same_seed_gives_byte_identical_labels_weights_and_metrics(checkpoint: Path, tiny_world: Path,
                                                                      tmp_path: Path) -> None:
    first = pipeline_run(checkpoint, tiny_world, tmp_path / "a", seed=0)
    second = pipeline_run(checkpoint, tiny_world, tmp_path / "b", seed=0)
    assert len(first["labels"]) == 40
    assert first == second


@pytest.mark.slow
def test_another_seed_gives_other_weights(checkpoint: Path, tiny_world: Path, tmp_path: Path) -> None:
    """The seed does reach the training (so the equality above is not a constant)."""
    first = pipeline_run(checkpoint, tiny_world, tmp_path / "a", seed=0)
    other = pipeline_run(checkpoint, tiny_world, tmp_path / "c", seed=1)
    assert first["labels"] == other["labels"] and other["weights"] != first["weights"]


def test_deterministic_flag_turns_torch_deterministic_algorithms_on_and_back_off(monkeypatch, tmp_path: Path) -> None:
    """The engine switches torch's deterministic algorithms on for the run only; the trainers pass the flag on."""
    from s4net.engine import LoopSettings, loop

    seen = []
    monkeypatch.setattr(loop._Run, "__init__", lambda self, *args: None)
    monkeypatch.setattr(loop._Run, "run", lambda self: seen.append(torch.are_deterministic_algorithms_enabled()))
    for enabled in (True, False):
        loop.run_training(None, LoopSettings(out=tmp_path, final_name="x.pt", iterations=1, batch_size=1, lr=0.1,
                                             device="cpu", deterministic=enabled))
    assert seen == [True, False] and not torch.are_deterministic_algorithms_enabled()

    from pipeline.segmenter import train as segmenter_train
    from s4net.train import TrainConfig, loop_settings

    assert loop_settings(TrainConfig(tmp_path, tmp_path, tmp_path, deterministic=True), False).deterministic
    captured = {}
    monkeypatch.setattr(segmenter_train, "SegmenterTask", lambda cfg: None)
    monkeypatch.setattr(segmenter_train, "run_training", lambda task, settings: captured.setdefault("s", settings))
    segmenter_train.train_segmenter(segmenter_train.SegTrainConfig(tmp_path, tmp_path, tmp_path, deterministic=True))
    assert captured["s"].deterministic
