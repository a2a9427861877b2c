"""The ``cam_saliency`` cue (Table 5's "Att + Sal"): CAM classifier, labels, cue, CLI and resumable training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import proxy_label_args
from PIL import Image

from pipeline.classes import CLASS_INDEX, IGNORE_INDEX
from pipeline.cli import main as wsss_main
from pipeline.cues import make_cue
from pipeline.cues.cam import CamConfig, CamNet, SeededKeywordBatches, load_cam, save_cam, split_holdout, train_cam
from pipeline.cues.keyword_assignment import AssignmentConfig
from pipeline.cues.label_painting import ProxyConfig, saliency_labels
from pipeline.cues.saliency import SaliencyCue
from pipeline.datasets.imagenet import KeywordEntry, write_keyword_table
from pipeline.datasets.voc import read_voc_label
from pipeline.proxy_labels.manifest import read_manifests
from s4net.inference import Detections

NO_BORDER = ProxyConfig(border=0)


def _two_objects(shape=(20, 40)) -> np.ndarray:
    """One salient mask covering a left and a right object, with background around."""
    masks = np.zeros((1, *shape), dtype=np.float32)
    masks[0, 5:15, 2:18] = 0.9
    masks[0, 5:15, 22:38] = 0.9
    return masks


def _left_right_maps(shape=(20, 40)) -> np.ndarray:
    maps = np.zeros((2, *shape), dtype=np.float32)
    maps[0, :, :20] = 1.0
    maps[1, :, 20:] = 0.8
    maps[1, :, 30:] = 0.1  # too weak to name anything
    return maps


def test_maps_split_the_foreground_of_a_multi_keyword_image() -> None:
    masks, maps = _two_objects(), _left_right_maps()
    labels = saliency_labels(masks, ["cat", "dog"], NO_BORDER, keyword_maps=maps)
    assert (labels[5:15, 2:18] == CLASS_INDEX["cat"]).all()
    assert (labels[5:15, 22:30] == CLASS_INDEX["dog"]).all()
    assert (labels[5:15, 30:38] == IGNORE_INDEX).all()  # the strongest map is below cam_threshold there
    assert (labels[0:3] == 0).all()
    # without maps the same image's foreground is ignore (the plain saliency cue)
    plain = saliency_labels(masks, ["cat", "dog"], NO_BORDER)
    assert set(np.unique(plain[masks[0] > 0.5]).tolist()) == {IGNORE_INDEX}
    # a single keyword names the whole foreground whatever the maps say
    single = saliency_labels(masks, ["cat"], NO_BORDER, keyword_maps=maps[:1])
    np.testing.assert_array_equal(single, saliency_labels(masks, ["cat"], NO_BORDER))
    with pytest.raises(ValueError, match="keyword maps"):
        saliency_labels(masks, ["cat", "dog"], NO_BORDER, keyword_maps=maps[:1])


class _FixedMaps:
    """Stands in for a CamNet: returns given maps and counts calls."""

    def __init__(self, maps: np.ndarray) -> None:
        self.maps, self.calls = maps, 0

    def keyword_maps(self, image: np.ndarray, keywords) -> np.ndarray:
        self.calls += 1
        assert len(keywords) == len(self.maps)
        return self.maps


def _detections(masks: np.ndarray) -> Detections:
    image = np.zeros((*masks.shape[1:], 3), dtype=np.uint8)
    return Detections(key="x", image=image, boxes=np.zeros((len(masks), 4), np.float32),
                      scores=np.full(len(masks), 0.9, np.float32), masks=masks)


def test_cue_uses_maps_only_where_saliency_cannot_name_the_foreground() -> None:
    assignment = AssignmentConfig(min_area=0.0)
    fake = _FixedMaps(_left_right_maps())
    cue = SaliencyCue(assignment, NO_BORDER, fake)  # what make_cue("cam_saliency", ...) builds
    assert cue.name == "cam_saliency"
    result = cue(_detections(_two_objects()), ["cat", "dog"])
    assert fake.calls == 1
    assert result.record["cam_keywords"]["cat"] > 0 and result.record["cam_keywords"]["dog"] > 0
    assert result.record["kept"] == 1 and result.record["rejected"] == 0
    assert result.label_ids == [0, CLASS_INDEX["cat"], CLASS_INDEX["dog"]]
    np.testing.assert_allclose(result.probabilities.sum(axis=0), 1.0, atol=1e-5)  # a CRF unary
    single = cue(_detections(_two_objects()), ["cat"])
    plain = SaliencyCue(assignment, NO_BORDER)(_detections(_two_objects()), ["cat"])
    assert fake.calls == 1  # single-keyword images need no maps
    np.testing.assert_array_equal(single.labels, plain.labels)
    with pytest.raises(ValueError, match="CAM classifier"):
        make_cue("cam_saliency", assignment, NO_BORDER)


def test_cam_net_maps_are_at_stride_16_and_normalised(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = CamNet("resnet18", size=64).eval()
    logits, maps = net(torch.rand(2, 3, 64, 64))
    assert logits.shape == (2, 20) and maps.shape == (2, 20, 4, 4)
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    out = net.keyword_maps(image, ["dog", "cat"])
    assert out.shape == (2, 50, 70) and out.dtype == np.float32
    assert out.min() >= 0.0 and np.allclose(out.reshape(2, -1).max(axis=1)[out.reshape(2, -1).max(axis=1) > 0], 1.0)
    save_cam(tmp_path / "cam.pt", net)
    loaded, report = load_cam(tmp_path / "cam.pt")
    np.testing.assert_array_equal(loaded.keyword_maps(image, ["dog", "cat"]), out)
    assert report == {}


def test_batches_are_a_function_of_seed_and_iteration() -> None:
    whole = list(SeededKeywordBatches(range(10), 4, seed=3, start=0, iterations=6))
    assert whole[4:] == list(SeededKeywordBatches(range(10), 4, seed=3, start=4, iterations=6))
    assert whole != list(SeededKeywordBatches(range(10), 4, seed=4, start=0, iterations=6))
    train, held = split_holdout(10, 0.2, 0)
    assert len(held) == 2 and sorted(train + held) == list(range(10))
    assert split_holdout(2, 0.9, 0)[0]  # at least one image to train on


COLOURS = {"cat": (220, 30, 30), "dog": (30, 30, 220)}


def _coloured_set(root: Path, count: int = 48) -> Path:
    """Red squares are cats, blue squares dogs, on grey; a third of the images hold both (cat left, dog right)."""
    rng = np.random.default_rng(0)
    entries = []
    for index in range(count):
        image = np.full((64, 64, 3), 128, dtype=np.uint8)
        kind = index % 3
        names = ["cat"] if kind == 0 else ["dog"] if kind == 1 else ["cat", "dog"]
        for slot, name in enumerate(names):
            x = (4 if len(names) == 2 and slot == 0 else 36 if len(names) == 2 else int(rng.integers(4, 36)))
            y = int(rng.integers(4, 36))
            image[y:y + 24, x:x + 24] = COLOURS[name]
        path = root / "train" / f"{index:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        entries.append(KeywordEntry(image=f"train/{index:03d}.png", keywords=tuple(names)))
    write_keyword_table(root / "keywords.csv", entries)
    return root


def test_cam_classifier_learns_keywords_and_localises_them(tmp_path: Path) -> None:
    root = _coloured_set(tmp_path / "set")
    config = CamConfig(size=64, iterations=60, batch_size=8, lr=0.02, holdout=0.25)
    path = train_cam(root, tmp_path / "cam", root / "keywords.csv", config, device="cpu", progress=False)
    report = json.loads((tmp_path / "cam" / "report.json").read_text())
    assert report["heldout_images"] == 12 and report["heldout_keyword_accuracy"] >= 0.75
    model, _ = load_cam(path)
    image = np.array(Image.open(root / "train" / "002.png").convert("RGB"))  # both: cat left, dog right
    maps = model.keyword_maps(image, ["cat", "dog"])
    assert maps[0][:, :32].mean() > maps[0][:, 32:].mean()
    assert maps[1][:, 32:].mean() > maps[1][:, :32].mean()


def test_a_cam_run_with_other_settings_refuses_to_resume(tmp_path: Path) -> None:
    """(Stopping and resuming the CAM classifier: tests/reliability/test_every_trainer.py, with the other trainers.)"""
    root = _coloured_set(tmp_path / "set", count=12)
    config = CamConfig(size=32, iterations=2, batch_size=4, holdout=0.0)
    train_cam(root, tmp_path / "resumed", root / "keywords.csv", config, device="cpu", checkpoint_every=3,
              progress=False)
    # other settings are refused, naming what changed
    with pytest.raises(Exception, match="lr: 0.02 -> 0.05"):
        train_cam(root, tmp_path / "resumed", root / "keywords.csv", CamConfig(size=32, iterations=6, batch_size=4,
                  holdout=0.0, lr=0.05), device="cpu", progress=False)


def test_proxy_labels_with_the_cam_cue(checkpoint: Path, tiny_world: Path, tmp_path: Path, capsys) -> None:
    imagenet = tiny_world / "imagenet"
    args = proxy_label_args(checkpoint, tiny_world, tmp_path / "labels", "--cue", "cam_saliency")
    assert wsss_main(args) == 2  # a usage error
    assert "--cam" in capsys.readouterr().err
    assert wsss_main(["train-cam", "--images", str(imagenet), "--keywords", str(imagenet / "keywords.csv"), "--out",
                      str(tmp_path / "cam"), "--size", "32", "--iterations", "2", "--batch-size", "2", "--device",
                      "cpu", "--cpu-bf16", "on", "-q"]) == 0
    assert "held-out keyword accuracy" in capsys.readouterr().out
    assert json.loads((tmp_path / "cam" / "train_config.json").read_text())["precision"] == "bfloat16"
    cam = tmp_path / "cam" / "cam.pt"
    assert wsss_main([*args, "--cam", str(cam)]) == 0
    records = [r for r in read_manifests(tmp_path / "labels").values() if not r.get("skipped")]
    assert len(records) == 40
    split = [r for r in records if len(r["keywords"]) > 1 and r["kept"]]
    assert split and all(set(r["cam_keywords"]) == set(r["keywords"]) for r in split)
    assert all("cam_keywords" not in r for r in records if len(r["keywords"]) == 1)
    for record in split:
        values = set(np.unique(read_voc_label(tmp_path / "labels" / "labels" / record["label"])).tolist())
        assert values <= {0, IGNORE_INDEX} | {CLASS_INDEX[k] for k in record["keywords"]}
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert wsss_main([*args, "--cam", str(bad)]) == 2
    assert "bad.pt" in capsys.readouterr().err
