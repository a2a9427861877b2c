"""COCO salient-instance reading and ``s4net convert-masks``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from s4net.cli import main as s4net_main
from s4net.data import SalientInstanceDataset, convert_instance_masks, encode_mask
from s4net.data.convert import boxes_overlap
from s4net.errors import DatasetError, InputError
from s4net.io import load_label_png, save_image


def test_reads_generated_salient_sets(tiny_world: Path) -> None:
    for split in ("train", "val", "test"):
        dataset = SalientInstanceDataset(tiny_world / "salient" / f"{split}.json", tiny_world / "salient" / "images")
        assert len(dataset) > 0
        for sample in dataset:
            n = len(sample.masks)
            assert 1 <= n <= 5
            assert sample.boxes.shape == (n, 4) and sample.occluded.shape == (n,)
            assert sample.masks.shape[1:] == sample.image.shape[:2]
            for box, mask in zip(sample.boxes, sample.masks, strict=True):
                ys, xs = np.nonzero(mask)
                assert (box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).all()
            assert not (sample.masks.sum(axis=0) > 1).any(), "visible masks must not overlap"


def _write_doc(tmp_path: Path, images: list, annotations: list, categories: list | None = None) -> Path:
    save_image(tmp_path / "img" / "a.png", np.zeros((10, 12, 3), np.uint8))
    doc = {"images": images, "annotations": annotations,
           "categories": categories or [{"id": 1, "name": "salient"}]}
    (tmp_path / "a.json").write_text(json.dumps(doc))
    return tmp_path / "a.json"


IMAGE = {"id": 1, "file_name": "a.png", "width": 12, "height": 10}


def test_polygon_and_rle_annotations(tmp_path: Path) -> None:
    mask = np.zeros((10, 12), np.uint8)
    mask[2:5, 3:9] = 1
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]], "bbox": [1, 1, 4, 4]},
        {"id": 2, "image_id": 1, "category_id": 1, "segmentation": encode_mask(mask), "occluded": True},
    ]
    sample = SalientInstanceDataset(_write_doc(tmp_path, [IMAGE], anns), tmp_path / "img")[0]
    assert sample.masks.shape == (2, 10, 12)
    assert sample.boxes[1].tolist() == [3, 2, 9, 5]  # from the mask when bbox is absent
    assert sample.occluded.tolist() == [False, True]
    assert sample.masks[1].sum() == 18


@pytest.mark.parametrize(
    ("doc_change", "words"),
    [
        (lambda d: d.pop("annotations"), "missing or non-list key 'annotations'"),
        (lambda d: d["images"][0].pop("width"), "images[0] lacks 'width'"),
        (lambda d: d["annotations"][0].pop("segmentation"), "lacks 'segmentation'"),
        (lambda d: d["annotations"][0].update(image_id=7), "unknown image_id 7"),
    ],
)
def test_bad_documents(tmp_path: Path, doc_change, words: str) -> None:
    doc = {"images": [dict(IMAGE)], "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 5, 1, 5, 5]]}],
        "categories": [{"id": 1, "name": "salient"}]}
    doc_change(doc)
    (tmp_path / "b.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError) as exc:
        SalientInstanceDataset(tmp_path / "b.json", tmp_path)
    assert words in str(exc.value) and "b.json" in str(exc.value)


def test_invalid_json_and_missing_category(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"bad.json: invalid JSON at line 1"):
        SalientInstanceDataset(tmp_path / "bad.json", tmp_path)
    path = _write_doc(tmp_path, [IMAGE], [], [{"id": 3, "name": "dog"}])
    with pytest.raises(DatasetError, match=r"no category named 'salient'; it has \['dog'\]"):
        SalientInstanceDataset(path, tmp_path / "img")


def test_size_mismatch_and_rle_mismatch(tmp_path: Path) -> None:
    wrong = dict(IMAGE, width=20)
    with pytest.raises(DatasetError, match=r"a.png: image is 12x10 but a.json says 20x10"):
        SalientInstanceDataset(_write_doc(tmp_path, [wrong], []), tmp_path / "img")[0]
    rle = encode_mask(np.ones((5, 5), np.uint8))
    ann = {"id": 1, "image_id": 1, "category_id": 1, "segmentation": rle}
    with pytest.raises(DatasetError, match=r"RLE size \[5, 5\] differs from its image"):
        SalientInstanceDataset(_write_doc(tmp_path, [IMAGE], [ann]), tmp_path / "img")[0]


def test_mask_outside_image_is_clipped_or_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[8, 6, 40, 6, 40, 40, 8, 40]],
         "bbox": [8, 6, 32, 34]},
        {"id": 2, "image_id": 1, "category_id": 1, "segmentation": [[50, 50, 60, 50, 60, 60]]},
    ]
    with caplog.at_level(logging.WARNING):
        sample = SalientInstanceDataset(_write_doc(tmp_path, [IMAGE], anns), tmp_path / "img")[0]
    assert len(sample.masks) == 1
    assert sample.boxes[0].tolist() == [8, 6, 12, 10]
    assert "annotation 2 has an empty mask" in caplog.text


def test_path_escaping_root_is_refused(tmp_path: Path) -> None:
    escaping = dict(IMAGE, file_name="../a.json")
    dataset = SalientInstanceDataset(_write_doc(tmp_path, [escaping], []), tmp_path / "img")
    with pytest.raises(InputError, match=r"escapes the dataset root"):
        dataset[0]


def test_real_coco_file_reads_class_agnostic(realdata: Path) -> None:
    root = realdata / "coco_val2017_icevision6"
    dataset = SalientInstanceDataset(root / "annotations.json", root / "images", category=None)
    coco = COCO(str(root / "annotations.json"))
    assert len(dataset) == 6
    total = 0
    for sample in dataset:
        expected = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[sample.image_id])) if not a["iscrowd"]]
        assert len(sample.masks) == len(expected)
        for mask, ann in zip(sample.masks, sorted(expected, key=lambda a: a["id"]), strict=True):
            assert np.array_equal(mask, coco.annToMask(ann))
        total += len(sample.masks)
    assert total == 35  # 36 instances, one of them iscrowd


def test_convert_masks_on_generated_voc(tiny_world: Path, tmp_path: Path) -> None:
    voc = tiny_world / "voc" / "VOC2012"
    out = tmp_path / "objects.json"
    assert s4net_main(["convert-masks", "--images", str(voc / "JPEGImages"), "--instance-masks",
                       str(voc / "SegmentationObject"), "--out", str(out), "-q"]) == 0
    coco = COCO(str(out))
    masks = sorted((voc / "SegmentationObject").glob("*.png"))
    assert len(coco.getImgIds()) == len(masks)
    for image_id, path in enumerate(masks, start=1):
        ids = load_label_png(path)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        present = [k for k in np.unique(ids) if k not in (0, 255)]
        assert len(anns) == len(present)
        for ann, k in zip(anns, present, strict=True):
            assert ann["area"] == int((ids == k).sum())
            assert np.array_equal(coco.annToMask(ann), (ids == k).astype(np.uint8))
    dataset = SalientInstanceDataset(out, voc / "JPEGImages")
    assert len(dataset[0].masks) > 0


def test_convert_masks_on_real_voc_objects(realdata: Path, tmp_path: Path) -> None:
    voc = realdata / "voc2012_seg16"
    document = convert_instance_masks(voc / "JPEGImages", voc / "SegmentationObject", tmp_path / "o.json",
                                      progress=False)
    coco = COCO(str(tmp_path / "o.json"))
    assert [img["file_name"] for img in document["images"]] == ["2007_000033.jpg", "2007_000063.jpg"]
    for image in document["images"]:
        ids = np.asarray(Image.open(voc / "SegmentationObject" / (Path(image["file_name"]).stem + ".png")))
        present = sorted(int(k) for k in np.unique(ids) if k not in (0, 255))
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        assert len(anns) == len(present) >= 2
        assert [a["area"] for a in anns] == [int((ids == k).sum()) for k in present]
        assert (image["height"], image["width"]) == ids.shape


def test_convert_masks_size_mismatch_and_missing_image(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    save_image(tmp_path / "img" / "a.jpg", np.zeros((10, 12, 3), np.uint8))
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.ones((8, 12), np.uint8), mode="L").save(tmp_path / "masks" / "a.png")
    code = s4net_main(["convert-masks", "--images", str(tmp_path / "img"), "--instance-masks",
                       str(tmp_path / "masks"), "--out", str(tmp_path / "o.json"), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "a.png: mask is 12x8 but its image a.jpg is 12x10" in err
    assert not (tmp_path / "o.json").exists()
    Image.fromarray(np.ones((10, 12), np.uint8), mode="L").save(tmp_path / "masks" / "b.png")
    (tmp_path / "masks" / "a.png").unlink()
    with pytest.raises(DatasetError, match=r"no image named b\.\* for mask b.png"):
        convert_instance_masks(tmp_path / "img", tmp_path / "masks", progress=False)


def test_occluded_from_box_overlap() -> None:
    boxes = np.array([[0, 0, 4, 4], [3, 3, 4, 4], [20, 20, 2, 2], [4, 0, 2, 2]], dtype=float)
    assert boxes_overlap(boxes).tolist() == [True, True, False, False]  # touching edges do not count
