"""`s4net peer`: the Mask R-CNN peer trains on S4Net's batches, resumes, and is scored as S4Net is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import s4net.reproduction.maskrcnn_peer as peer
from s4net.cli import main as s4net_main


def _train_args(world: Path, out: Path, *extra: str) -> list[str]:
    salient = world / "salient"
    return ["peer", "train", "--annotations", str(salient / "train.json"), "--images", str(salient / "images"),
            "--out", str(out), "--size", "64", "--batch-size", "2", "--iterations", "3", "--lr-steps", "2",
            "--warmup", "1", "--checkpoint-every", "2", "--device", "cpu", "-q", *extra]


@pytest.mark.slow  # 30 s; by default the peer runs through the engine in tests/reliability/test_every_trainer.py
def test_peer_trains_resumes_and_is_scored(tiny_world: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    assert s4net_main(_train_args(tiny_world, tmp_path / "whole")) == 0
    real, calls = peer.peer_targets, {"n": 0}

    def killed_in_iteration_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # after the checkpoint at iteration 2
        return real(*args, **kwargs)

    monkeypatch.setattr(peer, "peer_targets", killed_in_iteration_3)
    assert s4net_main(_train_args(tiny_world, tmp_path / "legs")) == 130
    assert not (tmp_path / "legs" / "model_final.pt").exists()
    assert torch.load(tmp_path / "legs" / "checkpoints" / "last.pt", weights_only=True)["iteration"] == 2
    monkeypatch.setattr(peer, "peer_targets", real)
    assert s4net_main(_train_args(tiny_world, tmp_path / "legs", "--lr", "0.05")) == 2
    assert "lr: 0.02 -> 0.05" in capsys.readouterr().err
    assert s4net_main(_train_args(tiny_world, tmp_path / "legs")) == 0
    a = torch.load(tmp_path / "whole" / "model_final.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "legs" / "model_final.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    salient = tiny_world / "salient"
    evaluate = ["peer", "evaluate", "--annotations", str(salient / "test.json"), "--images", str(salient / "images"),
                "--device", "cpu", "-q"]
    assert s4net_main([*evaluate, "--checkpoint", str(tmp_path / "whole" / "model_final.pt"), "--out",
                      str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert {"mAP50", "mAP70", "mAP50_occluded", "mAP70_occluded", "images_per_s"} <= set(metrics)
    assert 0.0 <= metrics["mAP50"] <= 1.0 and metrics["images_per_s"] > 0 and metrics["model_backbone"] == "resnet18"
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    capsys.readouterr()
    assert s4net_main([*evaluate, "--checkpoint", str(bad), "--out", str(tmp_path / "x.json")]) == 2
    assert "bad.pt" in capsys.readouterr().err and not (tmp_path / "x.json").exists()
