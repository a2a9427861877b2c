"""The field's pseudo-label protocol: VOC tags, proxy labels over VOC images, scores with precision and recall."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import LOOSE_CUES

from pipeline.classes import CLASS_INDEX, IGNORE_INDEX
from pipeline.cli import main as wsss_main
from pipeline.datasets.imagenet import read_keyword_table
from pipeline.datasets.voc import read_voc_label, write_voc_label
from pipeline.datasets.voc_tags import tags_from_mask, tags_from_xml, voc_split_tags
from pipeline.segmenter.metrics import confusion_matrix, score_folders, summarise
from s4net.errors import DatasetError

XML = """<annotation><filename>x.jpg</filename>
<object><name>dog</name><difficult>0</difficult><part><name>head</name></part></object>
<object><name>chair</name><difficult>1</difficult></object>
<object><name>person</name><part><name>hand</name></part></object>
<object><name>lamp</name><difficult>0</difficult></object>
</annotation>"""


def test_xml_tags_count_difficult_objects_unless_asked_and_skip_parts_and_other_names(tmp_path: Path) -> None:
    path = tmp_path / "a.xml"
    path.write_text(XML)
    assert tags_from_xml(path) == ("chair", "dog", "person")
    assert tags_from_xml(path, skip_difficult=True) == ("dog", "person")
    (tmp_path / "bad.xml").write_text("<annotation><object>")
    with pytest.raises(DatasetError, match="bad.xml"):
        tags_from_xml(tmp_path / "bad.xml")


def test_mask_tags_are_the_classes_present_without_background_or_void() -> None:
    labels = np.array([[0, 12, 12], [255, 15, 0]], dtype=np.uint8)
    assert tags_from_mask(labels) == ("dog", "person")
    assert tags_from_mask(np.array([[0, 255]], dtype=np.uint8)) == ()


def _tiny_voc(root: Path, xml_for: tuple[str, ...] = ()) -> Path:
    from PIL import Image

    for name in ("JPEGImages", "SegmentationClass", "Annotations", "ImageSets/Segmentation"):
        (root / name).mkdir(parents=True, exist_ok=True)
    masks = {"a": [[0, 12], [12, 255]], "b": [[15, 9], [0, 0]], "c": [[0, 0], [255, 0]]}
    for image_id, values in masks.items():
        Image.new("RGB", (2, 2)).save(root / "JPEGImages" / f"{image_id}{'.png' if image_id == 'b' else '.jpg'}")
        write_voc_label(root / "SegmentationClass" / f"{image_id}.png", np.array(values, dtype=np.uint8))
    for image_id in xml_for:
        (root / "Annotations" / f"{image_id}.xml").write_text(XML)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nb\nc\n")
    return root


def test_split_tags_take_one_source_for_the_whole_split(tmp_path: Path) -> None:
    root = _tiny_voc(tmp_path / "voc", xml_for=("a", "b"))
    tags = voc_split_tags(root, "train")
    assert tags.source == "masks"  # c has no XML: no mixing of sources
    assert [(e.image, e.keywords) for e in tags.entries] == [("a.jpg", ("dog",)), ("b.png", ("chair", "person"))]
    assert tags.untagged == ["c"]
    (root / "Annotations" / "c.xml").write_text(XML)
    tags = voc_split_tags(root, "train", skip_difficult=True)
    assert tags.source == "xml" and {e.keywords for e in tags.entries} == {("dog", "person")}


def test_voc_tags_command_writes_a_keyword_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _tiny_voc(tmp_path / "voc")
    assert wsss_main(["voc-tags", "--voc-root", str(root), "--out", str(tmp_path / "tags.csv")]) == 0
    entries = read_keyword_table(tmp_path / "tags.csv")
    assert [(e.image, e.keywords) for e in entries] == [("a.jpg", ("dog",)), ("b.png", ("chair", "person"))]
    assert "left out, e.g. c" in capsys.readouterr().out


def test_precision_recall_and_the_fields_ignore_policy_on_a_hand_count() -> None:
    target = np.array([[0, 0, 12, 12, 12, 255]], dtype=np.uint8)
    pred = np.array([[0, 12, 12, 255, 0, 12]], dtype=np.uint8)
    out = summarise(confusion_matrix(pred, target))
    # background: target 2 px, predicted bg 2 (one right); dog: target 3, predicted 2 (one right), one 255
    assert out["per_class_iou"]["background"] == pytest.approx(1 / 3)  # tp 1, union 2 + 2 - 1
    assert out["per_class_iou"]["dog"] == pytest.approx(1 / 4)  # tp 1, union 3 + 2 - 1
    assert out["per_class_precision"]["dog"] == pytest.approx(1 / 2)
    assert out["per_class_recall"]["dog"] == pytest.approx(1 / 3)
    assert out["per_class_precision"]["cat"] is None
    # the field's policy: the 255 pixel (target dog) becomes background
    assert out["per_class_iou_ignore_as_background"]["background"] == pytest.approx(1 / 4)  # tp 1, union 2 + 3 - 1
    assert out["per_class_iou_ignore_as_background"]["dog"] == pytest.approx(1 / 4)
    assert out["mIoU_ignore_as_background"] == pytest.approx(1 / 4)
    assert out["coverage"] == pytest.approx(4 / 5)


def test_score_restricted_to_listed_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
    write_voc_label(tmp_path / "gt" / "a.png", np.array([[0, 12]], dtype=np.uint8))
    write_voc_label(tmp_path / "gt" / "b.png", np.array([[15, 15]], dtype=np.uint8))  # not listed: not scored
    write_voc_label(tmp_path / "pred" / "a.png", np.array([[0, 12]], dtype=np.uint8))
    (tmp_path / "ids.txt").write_text("a\n")
    matrix, counts = score_folders(tmp_path / "pred", tmp_path / "gt", read_voc_label, ["a"])
    assert summarise(matrix)["mIoU"] == 1.0 and counts["images"] == 1
    assert wsss_main(["score", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--ids",
                      str(tmp_path / "ids.txt"), "--out", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["mIoU"] == 1.0
    assert "prec." in capsys.readouterr().out
    with pytest.raises(DatasetError, match="no ground truth for 1 listed ids"):
        score_folders(tmp_path / "pred", tmp_path / "gt", read_voc_label, ["a", "zz"])


def test_protocol_on_real_voc_images(realdata: Path, checkpoint: Path, tmp_path: Path) -> None:
    """Tags from the 16 real masks, proxy labels over JPEGImages (.jpg and .png), scored with the id list."""
    voc = realdata / "voc2012_seg16"
    ids = voc / "ids.txt"
    tags = tmp_path / "tags.csv"
    assert wsss_main(["voc-tags", "--voc-root", str(voc), "--ids", str(ids), "--out", str(tags), "-q"]) == 0
    entries = {e.image: e.keywords for e in read_keyword_table(tags)}
    assert len(entries) == 16
    assert entries["2007_000033.jpg"] == ("aeroplane",)
    assert entries["2007_001185.jpg"] == ("bottle", "cat", "diningtable", "person")
    assert entries["2007_000129.png"] == ("bicycle", "person")
    out = tmp_path / "proxy"
    assert wsss_main(["proxy-labels", "--checkpoint", str(checkpoint), "--images", str(voc / "JPEGImages"),
                      "--keywords", str(tags), "--out", str(out), "--cue", "saliency", "--batch-size", "4",
                      "--device", "cpu", "-q", *LOOSE_CUES]) == 0
    scores = tmp_path / "scores.json"
    assert wsss_main(["score", "--pred", str(out / "labels"), "--gt", str(voc / "SegmentationClass"), "--ids",
                      str(ids), "--out", str(scores), "-q"]) == 0
    summary = json.loads(scores.read_text())
    assert summary["images"] == 16 and summary["predictions_without_ground_truth"] == 0
    # the saliency cue labels single-tag images only, and only with their tag
    for image, keywords in entries.items():
        labels = read_voc_label(out / "labels" / Path(image).with_suffix(".png"))
        present = set(np.unique(labels).tolist()) - {0, IGNORE_INDEX}
        assert present <= ({CLASS_INDEX[keywords[0]]} if len(keywords) == 1 else set()), image


def test_pseudo_label_table_puts_each_labeller_beside_the_published_anchors(tmp_path: Path) -> None:
    from pipeline.reporting.pseudo_labels import ANCHORS

    target = np.array([[0, 0, 12, 12]], dtype=np.uint8)
    scores = {"instances": summarise(confusion_matrix(np.array([[0, 0, 12, 255]], dtype=np.uint8), target)),
              "saliency+oracle": summarise(confusion_matrix(target, target))}
    paths = []
    for name, summary in scores.items():
        paths.append(f"{name}={tmp_path / (name + '.json')}")
        (tmp_path / f"{name}.json").write_text(json.dumps({**summary, "images": 1}))
    assert wsss_main(["pseudo-label-table", "--scores", *paths, "--out", str(tmp_path / "table"), "-q"]) == 0
    table = json.loads((tmp_path / "table.json").read_text())
    rows = {row["labeller"]: row for row in table["rows"]}
    assert rows["instances"]["mIoU"] == pytest.approx((1 + 1 / 2) / 2)  # dog: 1 of 2 pixels, one left 255
    assert rows["instances"]["mIoU_ignore_as_background"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert rows["saliency+oracle"]["mIoU"] == 1.0
    page = (tmp_path / "table.html").read_text()
    assert "saliency from oracle maps" in page and "S4Net instances (ours)" in page
    for anchor in ANCHORS:
        assert html.escape(anchor.method) in page and html.escape(anchor.source) in page
