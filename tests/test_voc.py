"""The VOC 2012 reader against generated, hand-built and real PASCAL VOC files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import label_contacts
from PIL import Image
from pycocotools.coco import COCO

from pipeline.classes import CLASS_INDEX, VOC_CLASSES, class_index, voc_palette
from pipeline.datasets.synthetic.scenes import void_band
from pipeline.datasets.voc import VOCSegmentation, read_id_list, read_voc_label, write_voc_label
from s4net.data import SalientInstanceDataset, convert_instance_masks
from s4net.errors import DatasetError


def test_palette_matches_devkit_colours() -> None:
    palette = np.asarray(voc_palette()).reshape(256, 3)
    assert palette[0].tolist() == [0, 0, 0]
    assert palette[CLASS_INDEX["aeroplane"]].tolist() == [128, 0, 0]
    assert palette[CLASS_INDEX["person"]].tolist() == [192, 128, 128]
    assert palette[CLASS_INDEX["tvmonitor"]].tolist() == [0, 64, 128]
    assert palette[255].tolist() == [224, 224, 192]
    assert len({tuple(c) for c in palette}) == 256
    with pytest.raises(ValueError, match="unknown VOC class 'tv'"):
        class_index("tv")


def test_generated_voc_devkit_layout(tiny_world: Path) -> None:
    root = tiny_world / "voc" / "VOC2012"
    train, val = VOCSegmentation(root, "train"), VOCSegmentation(root, "val")
    assert set(read_id_list(root / "ImageSets/Segmentation/trainval.txt")) == set(train.ids) | set(val.ids)
    assert not set(train.ids) & set(val.ids)
    for sample in val:
        assert Image.open(val.label_path(sample.image_id)).mode == "P"
        assert val.image_path(sample.image_id).suffix == ".jpg"
        values = set(np.unique(sample.label).tolist())
        assert 0 in values and 255 in values and values - {0, 255}
        instances = val.instances(sample.image_id)
        assert np.array_equal(instances == 255, sample.label == 255)
        assert np.array_equal(instances == 0, sample.label == 0)


def test_generated_void_band_separates_labels_and_is_thin(tiny_world: Path) -> None:
    voc = VOCSegmentation(tiny_world / "voc" / "VOC2012", "val")
    for sample in voc:
        objects = voc.instances(sample.image_id)
        assert label_contacts(sample.label) == 0 and label_contacts(objects) == 0
        void = sample.label == 255
        assert 0.0 < void.mean() < 0.15
        # thin: eroding the band by one pixel (4-neighbourhood) leaves nothing
        core = void.copy()
        core[1:] &= void[:-1]
        core[:-1] &= void[1:]
        core[:, 1:] &= void[:, :-1]
        core[:, :-1] &= void[:, 1:]
        assert core.mean() < 0.01


def test_void_band_geometry() -> None:
    ids = np.zeros((9, 9), np.uint8)
    ids[3:6, 3:6] = 1
    band = void_band(ids, 0)
    assert band.sum() == 8 + 12  # the square's edge pixels and their 4-neighbours outside
    assert not band[4, 4] and not band[2, 2]
    assert void_band(ids, 1).sum() > band.sum()
    assert not void_band(np.zeros((5, 5), np.uint8), 3).any()


def test_label_roundtrip_and_bad_values(tmp_path: Path) -> None:
    labels = np.array([[0, 15, 255], [20, 1, 0]], np.uint8)
    write_voc_label(tmp_path / "a.png", labels)
    assert np.array_equal(read_voc_label(tmp_path / "a.png"), labels)
    colour = np.asarray(voc_palette(), np.uint8).reshape(256, 3)[labels]
    Image.fromarray(colour).save(tmp_path / "rgb.png")
    assert np.array_equal(read_voc_label(tmp_path / "rgb.png"), labels)
    Image.fromarray(np.array([[0, 21, 40]], np.uint8), mode="L").save(tmp_path / "bad.png")
    with pytest.raises(DatasetError, match=r"bad.png: label values \[21, 40\] are not VOC classes"):
        read_voc_label(tmp_path / "bad.png")


def _mini_voc(root: Path, image_size=(6, 4), label_size=(6, 4)) -> Path:
    (root / "JPEGImages").mkdir(parents=True)
    Image.new("RGB", image_size).save(root / "JPEGImages" / "x1.jpg")
    write_voc_label(root / "SegmentationClass" / "x1.png", np.zeros(label_size[::-1], np.uint8))
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\ufeffx1\n\n")
    return root


def test_mask_size_differs_from_image(tmp_path: Path) -> None:
    voc = VOCSegmentation(_mini_voc(tmp_path / "VOC2012", label_size=(5, 4)), "val")
    with pytest.raises(DatasetError, match=r"x1.png: label is 5x4 but its image is 6x4"):
        voc[0]


def test_missing_split_and_image(tmp_path: Path) -> None:
    root = _mini_voc(tmp_path / "VOC2012")
    assert VOCSegmentation(root, "val").ids == ["x1"]
    with pytest.raises(DatasetError, match=r"train.txt: no such id list"):
        VOCSegmentation(root, "train")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("x1\nx2\n")
    with pytest.raises(DatasetError, match=r"no image for id 'x2'"):
        VOCSegmentation(root, "val")[1]
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("x1\nx1\n")
    with pytest.raises(DatasetError, match=r"line 2: duplicate id 'x1'"):
        VOCSegmentation(root, "val")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("../x1\n")
    with pytest.raises(DatasetError, match=r"must be a bare file stem"):
        VOCSegmentation(root, "val")
    with pytest.raises(DatasetError, match=r"not a directory"):
        VOCSegmentation(tmp_path / "nowhere", "val")


def test_real_voc_class_masks(realdata: Path) -> None:
    root = realdata / "voc2012_seg16"
    voc = VOCSegmentation(root, ids_file=root / "ids.txt")
    assert len(voc) == 16
    seen: set[int] = set()
    for sample in voc:  # .png files in JPEGImages are found too
        assert sample.label.shape == sample.image.shape[:2]
        values = set(np.unique(sample.label).tolist())
        assert 255 in values and values <= set(range(21)) | {255}
        assert 0.0 < (sample.label == 255).mean() < 0.15
        seen |= values - {0, 255}
    names = {VOC_CLASSES[c] for c in seen}
    assert names == {"aeroplane", "bicycle", "bottle", "bus", "car", "cat", "chair", "diningtable", "dog",
                     "horse", "person", "sofa", "train", "tvmonitor"}


def test_real_voc_objects_match_class_foreground(realdata: Path) -> None:
    root = realdata / "voc2012_seg16"
    voc = VOCSegmentation(root, ids_file=root / "ids.txt")
    for image_id in ("2007_000033", "2007_000063"):
        label, objects = voc.label(image_id), voc.instances(image_id)
        assert np.array_equal(label == 255, objects == 255)
        assert np.array_equal((label > 0) & (label < 255), (objects > 0) & (objects < 255))
        for k in set(np.unique(objects).tolist()) - {0, 255}:
            assert len(np.unique(label[objects == k])) == 1  # one class per instance


def test_real_labelme_voc_export_converts_like_its_coco_export(realdata: Path, tmp_path: Path) -> None:
    root = realdata / "labelme_voc_instance3"
    voc_dir = root / "data_dataset_voc"
    converted = convert_instance_masks(voc_dir / "JPEGImages", voc_dir / "SegmentationObject", tmp_path / "c.json",
                                       progress=False)
    assert len(converted["annotations"]) == 12
    ours = SalientInstanceDataset(tmp_path / "c.json", voc_dir / "JPEGImages")
    theirs = COCO(str(root / "data_dataset_coco" / "annotations.json"))
    by_name = {Path(img["file_name"]).name: img["id"] for img in theirs.dataset["images"]}
    for sample in ours:
        their_masks = [theirs.annToMask(a)
                       for a in theirs.loadAnns(theirs.getAnnIds(imgIds=[by_name[sample.file_name]]))]
        assert len(their_masks) == len(sample.masks)
        for mask in sample.masks:  # each converted instance matches one polygon of labelme's COCO export
            ious = [(mask & m).sum() / (mask | m).sum() for m in their_masks]
            assert max(ious) > 0.8
