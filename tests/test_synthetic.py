"""The synthetic salient world: determinism, idempotence, statistics the issue asks for,
and that classes and saliency are learnable from appearance."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.cli import main as wsss_main
from pipeline.datasets.synthetic.scenes import MAX_AREA_FRACTION, MIN_AREA_FRACTION, compose_scene
from pipeline.datasets.synthetic.world import generate_world
from s4net.data import SalientInstanceDataset
from s4net.errors import InputError


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_trees_whatever_the_workers(tmp_path: Path, tiny_world: Path) -> None:
    assert wsss_main(["demo-data", "--out", str(tmp_path / "b"), "--scale", "tiny", "--workers", "2", "-q"]) == 0
    first, second = tree_digest(tiny_world), tree_digest(tmp_path / "b")
    assert len(first) > 200 and first == second
    assert wsss_main(["demo-data", "--out", str(tmp_path / "c"), "--scale", "tiny", "--seed", "1", "-q"]) == 0
    other = tree_digest(tmp_path / "c")
    assert other.keys() != first.keys() or other != first


def test_rerun_is_a_no_op_and_conflicts_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "w"
    generate_world(out, seed=5, scale="tiny", progress=False)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    generate_world(out, seed=5, scale="tiny", progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert wsss_main(["demo-data", "--out", str(out), "--scale", "tiny", "--seed", "6", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{out}: exists and holds another seed/scale; pass --overwrite" in err
    generate_world(out, seed=6, scale="tiny", progress=False, overwrite=True)
    assert json.loads((out / "world.json").read_text())["seed"] == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]


def test_stale_partial_tree_from_a_killed_run_is_discarded(tmp_path: Path) -> None:
    stale = tmp_path / ".w.partial"
    (stale / "salient").mkdir(parents=True)
    (stale / "salient" / "train.json").write_text("{half")
    generate_world(tmp_path / "w", seed=0, scale="tiny", progress=False)
    assert not stale.exists()
    json.loads((tmp_path / "w" / "salient" / "train.json").read_text())


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown scale 'huge'"):
        generate_world(tmp_path / "x", scale="huge")
    with pytest.raises(InputError, match="seed must be >= 0"):
        generate_world(tmp_path / "x", seed=-1)
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "mine.txt").write_text("keep me")
    with pytest.raises(InputError, match="holds other files"):
        generate_world(tmp_path / "y", scale="tiny", progress=False)
    assert (tmp_path / "y" / "mine.txt").read_text() == "keep me"


def test_salient_scenes_meet_the_spec(tiny_world: Path) -> None:
    images = overlapping = 0
    for split in ("train", "val", "test"):
        dataset = SalientInstanceDataset(tiny_world / "salient" / f"{split}.json", tiny_world / "salient" / "images")
        document = json.loads((tiny_world / "salient" / f"{split}.json").read_text())
        assert [c["name"] for c in document["categories"]] == ["salient"]
        assert all(isinstance(a["occluded"], bool) and isinstance(a["segmentation"]["counts"], str)
                   for a in document["annotations"])
        for sample in dataset:
            images += 1
            overlapping += bool(sample.occluded.any())
            assert 1 <= len(sample.masks) <= 5
            area = sample.image.shape[0] * sample.image.shape[1]
            for mask, occluded in zip(sample.masks, sample.occluded, strict=True):
                visible = mask.sum() / area
                assert visible <= MAX_AREA_FRACTION
                if not occluded:
                    assert visible >= MIN_AREA_FRACTION
    assert overlapping / images >= 0.25


def test_world_statistics_recorded(tiny_world: Path) -> None:
    stats = json.loads((tiny_world / "world.json").read_text())["stats"]
    for split in ("train", "val", "test"):
        low, high = stats["salient"][split]["object_area_fraction"]
        assert MIN_AREA_FRACTION <= low and high <= MAX_AREA_FRACTION
    assert stats["imagenet"]["multi_keyword_fraction"] >= 0.2
    assert stats["imagenet"]["keywords_per_image"] == [1, 3]


def test_contact_sheet_written(tiny_world: Path) -> None:
    sheet = Image.open(tiny_world / "preview" / "contact_sheet.png")
    assert sheet.size == (12 * 160, 3 * 160)
    assert np.asarray(sheet).std() > 20


def _saturation(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float64)
    top = rgb.max(axis=-1)
    return np.where(top > 0, (top - rgb.min(axis=-1)) / np.maximum(top, 1), 0)


def test_salient_objects_stand_out_by_contrast(tiny_world: Path) -> None:
    dataset = SalientInstanceDataset(tiny_world / "salient" / "train.json", tiny_world / "salient" / "images")
    gaps = []
    for sample in dataset:
        saturation = _saturation(sample.image)
        foreground = sample.masks.any(axis=0)
        gaps.append(saturation[foreground].mean() - saturation[~foreground].mean())
    assert min(gaps) > 0.1 and np.mean(gaps) > 0.3


def _features(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    pixels = image[mask].astype(np.float64) / 255
    ys, xs = np.nonzero(mask)
    fill = mask.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))
    inside = mask[:, 1:] & mask[:, :-1]
    texture = np.abs(np.diff(image.astype(np.float64).mean(axis=2), axis=1))[inside].mean() / 255
    return np.r_[pixels.mean(axis=0), pixels.std(axis=0), fill, texture]


def test_classes_are_distinguishable_by_appearance() -> None:
    """A nearest-centroid classifier on 8 hand features, fitted on one set of scenes,
    names the class of objects in other scenes far above chance (5%)."""

    def instances(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        features, labels = [], []
        for index in range(count):
            scene = compose_scene(rng, 80, 80, [index % 20 + 1], False, 2)
            if scene.classes:
                features.append(_features(scene.image, scene.instance_ids == 1))
                labels.append(scene.classes[0])
        return np.asarray(features), np.asarray(labels)

    train_x, train_y = instances(1, 200)
    test_x, test_y = instances(2, 100)
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-9
    centroids = np.stack([((train_x - mean) / std)[train_y == c].mean(axis=0) for c in range(1, 21)])
    distances = ((((test_x - mean) / std)[:, None, :] - centroids[None]) ** 2).sum(axis=-1)
    accuracy = float((distances.argmin(axis=1) + 1 == test_y).mean())
    assert accuracy > 0.6
