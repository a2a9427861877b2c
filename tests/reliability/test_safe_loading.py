"""Checkpoints load with ``weights_only=True`` only: payloads are refused, mismatches are named in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import SMALL_S4NET, Payload

BIN = Path(sys.executable).parent


def hostile_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"format": "s4net-checkpoint", "format_version": 1, "model": Payload(marker)}, path)
    return path


def one_line_error(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-1500:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("command", [
    ["s4net", "predict", "--checkpoint", "{ckpt}", "--images", "{dir}", "--out", "{dir}/out"],
    ["wsss", "evaluate", "--checkpoint", "{ckpt}", "--voc-root", "{dir}", "--out", "{dir}/m.json"],
    ["wsss", "proxy-labels", "--checkpoint", "{good}", "--classifier", "{ckpt}", "--images", "{world}/imagenet",
     "--keywords", "{world}/imagenet/keywords.csv", "--out", "{dir}/out"],
])
def test_a_pickle_with_a_payload_is_refused_and_never_runs(tmp_path: Path, checkpoint: Path, tiny_world: Path,
                                                           command: list[str]) -> None:
    marker = tmp_path / "payload_ran"
    hostile = hostile_checkpoint(tmp_path / "hostile.pt", marker)
    argv = [str(BIN / command[0])] + [a.format(ckpt=hostile, dir=tmp_path, good=checkpoint, world=tiny_world)
                                      for a in command[1:]]
    line = one_line_error(argv)
    assert str(hostile) in line and ("weights-only" in line or "not a readable" in line), line
    assert not marker.exists(), "the payload ran"


def test_checkpoints_of_another_kind_or_version_say_so(tmp_path: Path, checkpoint: Path) -> None:
    from pipeline.segmenter.model import SegmenterConfig, build_segmenter, save_segmenter
    from s4net.checkpoint import load_checkpoint, read_checkpoint
    from s4net.errors import InputError

    segmenter = tmp_path / "seg.pt"
    save_segmenter(segmenter, build_segmenter(SegmenterConfig(encoder="resnet18")), SegmenterConfig(encoder="resnet18"))
    with pytest.raises(InputError, match="not an S4Net checkpoint"):
        read_checkpoint(segmenter)
    line = one_line_error([str(BIN / "wsss"), "evaluate", "--checkpoint", str(checkpoint), "--voc-root", str(tmp_path),
                           "--out", str(tmp_path / "m.json")])
    assert "not a segmenter checkpoint" in line
    payload = read_checkpoint(checkpoint)
    torch.save({**payload, "format_version": 99}, tmp_path / "future.pt")
    with pytest.raises(InputError, match="format_version 99 differs from this library's 1"):
        read_checkpoint(tmp_path / "future.pt")
    # weights of another model config under this one's config: the tensor is named
    wider = dict(payload["config"], fpn_channels=SMALL_S4NET["fpn_channels"] * 2)
    torch.save({**payload, "config": wider}, tmp_path / "mismatch.pt")
    with pytest.raises(InputError, match=r"do not fit the checkpoint's own config: size mismatch for fpn"):
        load_checkpoint(tmp_path / "mismatch.pt")


def test_resuming_with_other_settings_names_the_fields_that_differ(tiny_world: Path, tmp_path: Path) -> None:
    from s4net.config import S4NetConfig
    from s4net.errors import InputError
    from s4net.train import TrainConfig, train

    salient = tiny_world / "salient"

    def config(**changes) -> TrainConfig:
        values = dict(annotations=salient / "train.json", images=salient / "images", out=tmp_path, iterations=2,
                      batch_size=2, lr=0.01, lr_steps=(1,), checkpoint_every=1, seed=0, device="cpu",
                      model=S4NetConfig(backbone="resnet18", **SMALL_S4NET))
        values.update(changes)
        return TrainConfig(**values)

    train(config(), progress=False)
    with pytest.raises(InputError, match=r"lr: 0\.01 -> 0\.02.*model\.fpn_channels: 32 -> 64|"
                                         r"model\.fpn_channels: 32 -> 64.*lr: 0\.01 -> 0\.02"):
        train(config(lr=0.02, model=S4NetConfig(backbone="resnet18", **{**SMALL_S4NET, "fpn_channels": 64})),
              progress=False)


def test_a_corrupt_last_checkpoint_is_set_aside_and_training_goes_on(tiny_world: Path, tmp_path: Path) -> None:
    """last.pt truncated outside our atomic writes: the newest readable snapshot takes over, same final weights."""
    from s4net.checkpoint import read_checkpoint
    from s4net.config import S4NetConfig
    from s4net.train import TrainConfig, train

    salient = tiny_world / "salient"

    def config(out: Path, iterations: int) -> TrainConfig:
        return TrainConfig(annotations=salient / "train.json", images=salient / "images", out=out,
                           iterations=iterations, batch_size=2, lr=0.01, lr_steps=(5,), checkpoint_every=2, seed=1,
                           device="cpu", keep_snapshots=0, model=S4NetConfig(backbone="resnet18", **SMALL_S4NET))

    straight = read_checkpoint(train(config(tmp_path / "straight", 6), progress=False))["model"]
    out = tmp_path / "broken"
    import s4net.train as train_module

    real = train_module.learning_rate_factor

    def stop_at_5(iteration: int, cfg: TrainConfig) -> float:
        if iteration == 5:
            raise KeyboardInterrupt
        return real(iteration, cfg)

    train_module.learning_rate_factor = stop_at_5
    try:
        with pytest.raises(KeyboardInterrupt):
            train(config(out, 6), progress=False)
    finally:
        train_module.learning_rate_factor = real
    last = out / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # in place: its hard-linked snapshot iter_4 breaks with it
    resumed = read_checkpoint(train(config(out, 6), progress=False))["model"]
    assert (out / "checkpoints" / "last.pt.corrupt").exists()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
