"""The ImageNet classifier's own class activation maps (pipeline.cues.imagenet_cam)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from pipeline.classes import FOREGROUND_CLASSES
from pipeline.cues.imagenet_cam import POOLINGS, ImageNetCam, ImageNetCamConfig, classifier_input, pool_members
from pipeline.datasets.imagenet import load_wnid_map, voc_imagenet_indices


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

    cam = ImageNetCam()
    rows = list(csv.DictReader((realdata / "imagenet_voc_classes" / "labels.csv").open()))
    hits = 0
    for row in rows:
        image = load_rgb(realdata / "imagenet_voc_classes" / row["filename"])
        hits += FOREGROUND_CLASSES[int(np.argmax(cam.voc_scores(image)))] == row["voc_class"]
    assert hits >= 38, f"{hits}/{len(rows)}"

