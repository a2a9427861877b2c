"""The real-photo salient-instance builder (wsss realphoto-data) on ../shared/realdata, and its parts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.cli import main as wsss
from pipeline.datasets.realphoto import (
    COCO128,
    COCO_VAL,
    SOD,
    VOC_ID,
    Photo,
    RealPhotoConfig,
    build_realphoto,
    check_not_voc,
    choose_holdout,
    mask_components,
)
from pipeline.datasets.yolo_seg import COCO80_CLASSES, VOC_CLASS_IDS, rasterise_polygon, read_yolo_seg
from s4net.data.coco import SalientInstanceDataset
from s4net.errors import DatasetError


@pytest.fixture(scope="module")
def built(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("realphoto")
    return out, build_realphoto(realdata, out, progress=False)


def _files(path: Path) -> list[str]:
    return [entry["file_name"] for entry in json.loads(path.read_text())["images"]]


def test_counts_per_source(built: tuple[Path, dict]) -> None:
    _, summary = built
    assert summary["sources"][SOD] == {"images": 30, "instances": 59, "crowd": 0, "held_out_images": 10,
                                       "held_out_instances": 19, "without_components": 0}
    assert summary["sources"][COCO_VAL] == {"images": 5, "instances": 35, "crowd": 1, "images_without_instance": 1}
    coco128 = summary["sources"][COCO128]
    assert (coco128["images"], coco128["instances"], coco128["not_voc_instances"]) == (31, 119, 36)
    assert (summary["train"]["images"], summary["train"]["instances"]) == (66, 213)


def test_reader_reads_train_and_val_in_place(built: tuple[Path, dict], realdata: Path) -> None:
    out, summary = built
    train = SalientInstanceDataset(out / "train.json", realdata)
    assert sum(len(train.annotations(i)) for i in train.image_ids) == 213  # the crowd annotation is dropped
    val = SalientInstanceDataset(out / "val.json", realdata)
    assert len(val) == 10 and sum(len(val.annotations(i)) for i in val.image_ids) == 19


def test_holdout_is_out_of_training_and_stratified(built: tuple[Path, dict], realdata: Path) -> None:
    out, summary = built
    held = (out / "heldout_sod.txt").read_text().split()
    assert held == summary["heldout_sod"] and len(held) == 10
    train, val = _files(out / "train.json"), _files(out / "val.json")
    assert sorted(Path(f).stem for f in val) == held
    assert not set(train) & set(val)
    components = {row["id"]: int(row["n_components_gt_0.5pct"])
                  for row in csv.DictReader((realdata / SOD / "index.csv").open())}
    assert sum(components[i] == 1 for i in held) == 4  # 15 of 40 photos are single-component: 3.75 -> 4


def test_no_voc_image_is_read(built: tuple[Path, dict]) -> None:
    out, _ = built
    for name in _files(out / "train.json") + _files(out / "val.json"):
        assert name.split("/")[0] in (SOD, COCO_VAL, COCO128)
        assert not VOC_ID.fullmatch(Path(name).stem)
    with pytest.raises(DatasetError, match="2007_000033.jpg: is named like a VOC image"):
        check_not_voc([Photo(COCO128, "2007_000033.jpg", 4, 4, [])], Path("/data"))


def test_sod_components_match_the_index(built: tuple[Path, dict], realdata: Path) -> None:
    _, summary = built
    index = {row["id"]: row for row in csv.DictReader((realdata / SOD / "index.csv").open())}
    for photo in summary["sod_photos"]:
        assert photo["components"] == int(index[photo["id"]]["n_components_gt_0.5pct"])
        assert photo["kept_fg_fraction"] == pytest.approx(float(index[photo["id"]]["fg_fraction"]), abs=0.006)


def test_hand_picked_sod_photo_decodes_to_its_components(built: tuple[Path, dict], realdata: Path) -> None:
    out, _ = built
    dataset = SalientInstanceDataset(out / "train.json", realdata)
    index = [i for i in dataset.image_ids if dataset.coco.imgs[i]["file_name"].endswith("/101085.jpg")]
    sample = dataset[dataset.image_ids.index(index[0])]
    truth = np.asarray(Image.open(realdata / SOD / "masks" / "101085.png").convert("L")) > 127
    assert len(sample.masks) == 3  # index.csv: 3 components above 0.5%, 58.3% foreground
    assert sample.masks.sum(axis=0).max() == 1  # components are disjoint
    assert not (sample.masks.any(axis=0) & ~truth).any()
    assert sample.masks.sum() / truth.size == pytest.approx(0.583, abs=0.005)
    assert all(m.sum() >= 0.005 * truth.size for m in sample.masks)


def test_coco128_keeps_only_voc_classes(built: tuple[Path, dict], realdata: Path) -> None:
    out, _ = built
    dataset = SalientInstanceDataset(out / "train.json", realdata)
    for image_id in dataset.image_ids:
        name = dataset.coco.imgs[image_id]["file_name"]
        if name.startswith(COCO128):
            lines = read_yolo_seg(realdata / COCO128 / "labels" / f"{Path(name).stem}.txt")
            assert len(dataset.annotations(image_id)) == sum(x.class_id in VOC_CLASS_IDS for x in lines)


def test_coco80_table_is_coco_order(realdata: Path) -> None:
    document = json.loads((realdata / COCO_VAL / "annotations.json").read_text())
    assert tuple(c["name"] for c in sorted(document["categories"], key=lambda c: c["id"])) == COCO80_CLASSES
    assert sorted(VOC_CLASS_IDS) == [0, 1, 2, 3, 4, 5, 6, 8, 14, 15, 16, 17, 18, 19, 39, 56, 57, 58, 60, 62]


def test_deterministic_given_the_seed(built: tuple[Path, dict], realdata: Path, tmp_path: Path) -> None:
    out, summary = built
    again = build_realphoto(realdata, tmp_path / "same", progress=False)
    for name in ("train.json", "val.json", "heldout_sod.txt"):
        assert (tmp_path / "same" / name).read_bytes() == (out / name).read_bytes()
    other = build_realphoto(realdata, tmp_path / "other", RealPhotoConfig(seed=1), progress=False)
    assert other["heldout_sod"] != again["heldout_sod"] == summary["heldout_sod"]


def test_choose_holdout_and_components() -> None:
    components = {f"{i}": 1 if i < 3 else 2 for i in range(8)}  # 3 single, 5 multi
    held = choose_holdout(components, 4, seed=0)
    assert len(held) == 4 and sum(components[i] == 1 for i in held) == 2  # 1.5 -> 1 or 2; 2.5 -> 2 or 3
    assert held == choose_holdout(components, 4, seed=0)
    with pytest.raises(ValueError, match="cannot hold out 9 of 8"):
        choose_holdout(components, 9, seed=0)
    foreground = np.zeros((20, 20), dtype=bool)
    foreground[:5, :5] = True
    foreground[5, 5] = True  # diagonal neighbour: the same component (8-connected)
    foreground[10:20, 10:20] = True
    foreground[0, 19] = True  # a speck of 1/400 of the image
    masks = mask_components(foreground, 0.005)
    assert [int(m.sum()) for m in masks] == [26, 100]


def test_yolo_seg_reading(tmp_path: Path) -> None:
    mask = rasterise_polygon(np.array([[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]]), 40, 20)
    assert mask.shape == (20, 40) and mask.sum() == pytest.approx(20 * 10, abs=30)
    bad = tmp_path / "x.txt"
    bad.write_text("0 0.1 0.1 0.2 0.2 0.3\n")
    with pytest.raises(DatasetError, match=r"x.txt: line 1: a polygon needs an even number"):
        read_yolo_seg(bad)
    bad.write_text("80 0.1 0.1 0.2 0.2 0.3 0.3\n")
    with pytest.raises(DatasetError, match="class 80 is not a COCO-80 id"):
        read_yolo_seg(bad)


def test_cli_missing_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert wsss(["realphoto-data", "--realdata", str(tmp_path / "absent"), "--out", str(tmp_path / "o"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{tmp_path / 'absent'}: not a directory" in err
    with pytest.raises(ValueError, match="holdout_sod=-1"):
        RealPhotoConfig(holdout_sod=-1)
