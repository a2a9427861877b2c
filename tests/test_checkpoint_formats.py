"""Files written by release 0.1.0 still load: one fixture per checkpoint kind (tests/fixtures/checkpoints).

The fixtures keep the exact keys, shapes, dtypes and layout of real files, with every
tensor a broadcast constant so that they stay small (make_fixtures.py says how they were made).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "checkpoints"


def _stored(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _weights_loaded(model: torch.nn.Module, stored: dict[str, torch.Tensor]) -> None:
    """Every stored tensor is in the model, value for value, and nothing else is."""
    state = model.state_dict()
    assert stored.keys() == state.keys()
    assert all(torch.equal(state[name].cpu(), stored[name]) for name in stored)


def _restored(model: torch.nn.Module, path: Path, state: dict, key: dict, tmp_path: Path) -> int:
    """Restore a training state into ``model`` and a fresh SGD; the iteration it goes on from."""
    from s4net.engine import parameter_groups, restore_training

    optimizer = torch.optim.SGD(parameter_groups(model, 1e-4), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    start = restore_training(state, key, path, model, optimizer, scaler, tmp_path / "metrics.jsonl")
    assert optimizer.state_dict()["state"], "the optimizer's momentum buffers were not restored"
    _weights_loaded(model, state["model"])
    return start


def _small_s4net_config():
    from s4net.config import S4NetConfig

    return S4NetConfig(backbone="resnet18", norm="bn", image_size=64, fpn_channels=32, head_channels=32,
                       compress_channels=16, branch_channels=(16, 8))


def test_s4net_model_checkpoint_loads_and_predicts() -> None:
    from s4net.checkpoint import load_checkpoint

    path = FIXTURES / "s4net_model_final.pt"
    model = load_checkpoint(path)
    assert model.config == _small_s4net_config()
    _weights_loaded(model, _stored(path)["model"])
    (prediction,) = model.predict([torch.rand(3, 80, 72)])
    assert prediction["masks"].shape[-2:] == (80, 72)


def test_s4net_training_state_resumes_a_run_with_the_same_settings(tmp_path: Path) -> None:
    from s4net.checkpoint import build_model, read_checkpoint
    from s4net.train import TrainConfig

    path = FIXTURES / "s4net_last.pt"
    state = read_checkpoint(path)
    settings = TrainConfig(annotations="a.json", images="images", out=tmp_path, iterations=2, batch_size=2,
                           lr_steps=(1,), checkpoint_every=1, device="cpu", model=_small_s4net_config())
    assert _restored(build_model(_small_s4net_config()), path, state, settings.resume_key(), tmp_path) == 2


def test_segmenter_checkpoints_load() -> None:
    from pipeline.segmenter.model import load_segmenter

    path = FIXTURES / "segmenter_model_final.pt"
    model, config = load_segmenter(path)
    assert (config.arch, config.encoder, config.classes) == ("deeplabv3plus", "resnet18", 21)
    _weights_loaded(model, _stored(path)["model"])
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 21, 64, 64)


def test_a_segmenter_checkpoint_with_an_unknown_config_key_is_refused(tmp_path: Path) -> None:
    from pipeline.segmenter.model import load_segmenter
    from s4net.errors import InputError

    payload = _stored(FIXTURES / "segmenter_model_final.pt")
    torch.save({**payload, "config": {**payload["config"], "colour": "red"}}, tmp_path / "odd.pt")
    with pytest.raises(InputError, match=r"unknown SegmenterConfig field\(s\) \['colour'\]"):
        load_segmenter(tmp_path / "odd.pt")


def test_segmenter_training_state_restores(tmp_path: Path) -> None:
    from pipeline.segmenter.model import SegmenterConfig, build_segmenter, read_segmenter

    path = FIXTURES / "segmenter_last.pt"
    state = read_segmenter(path)
    model = build_segmenter(SegmenterConfig(**state["config"]))
    assert _restored(model, path, state, state["train"], tmp_path) == 2


def test_cam_classifier_loads_and_maps() -> None:
    from pipeline.cues.cam import load_cam

    path = FIXTURES / "cam.pt"
    model, report = load_cam(path)
    assert (model.backbone, model.size) == ("resnet18", 32) and report["iterations"] == 2
    _weights_loaded(model, _stored(path)["model"])
    maps = model.keyword_maps(np.zeros((40, 50, 3), dtype=np.uint8), ["cat", "dog"])
    assert maps.shape == (2, 40, 50)


def test_cam_training_state_restores(tmp_path: Path) -> None:
    from pipeline.cues.cam import CamNet, read_cam

    path = FIXTURES / "cam_last.pt"
    state = read_cam(path)
    assert _restored(CamNet(**state["config"]), path, state, state["train"], tmp_path) == 2


def test_instance_classifier_loads() -> None:
    from pipeline.cues.instance_classifier import load_classifier

    path = FIXTURES / "instance_classifier.pt"
    model, report = load_classifier(path)
    assert (model.features, model.hidden) == (32, 8) and report["instances"] == 40
    _weights_loaded(model, _stored(path)["state_dict"])
    probabilities = model.keyword_probabilities(np.ones((3, 32), dtype=np.float32), ["cat", "dog"])
    assert probabilities.shape == (3, 2) and np.allclose(probabilities.sum(axis=1), 1.0)


def test_maskrcnn_peer_checkpoints_load(tmp_path: Path) -> None:
    from s4net.reproduction.maskrcnn_peer import PeerConfig, build_maskrcnn, load_peer, read_peer

    path = FIXTURES / "maskrcnn_peer_model_final.pt"
    model, config = load_peer(path)
    assert config == PeerConfig(backbone="resnet18", size=64, detections=20)
    _weights_loaded(model, _stored(path)["model"])
    last = FIXTURES / "maskrcnn_peer_last.pt"
    state = read_peer(last)
    assert _restored(build_maskrcnn(PeerConfig(**state["config"])), last, state, state["train"], tmp_path) == 2
