"""The real-photo run's summary: rows by labeller with titles, SOD IoU, the label sheet, and the workflow's plan."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.cli import main as wsss
from pipeline.datasets.voc import write_voc_label
from pipeline.reporting.realphoto import TILE_HEIGHT, label_sheet, realphoto_summary, title

REPO = Path(__file__).resolve().parents[1]


def _voc(root: Path) -> list[str]:
    """Two images (one stored as PNG, as in the real copy) with class masks."""
    (root / "JPEGImages").mkdir(parents=True)
    ids = ["2007_000001", "2007_000002"]
    for k, image_id in enumerate(ids):
        image = np.full((40 + 10 * k, 60, 3), 200, np.uint8)
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.{'jpg' if k == 0 else 'png'}")
        label = np.zeros(image.shape[:2], np.uint8)
        label[10:30, 10:40] = 8 + k
        write_voc_label(root / "SegmentationClass" / f"{image_id}.png", label)
    (root / "ids.txt").write_text("\n".join(ids) + "\n")
    return ids


def test_titles_name_model_and_cue():
    assert title("lite0/instances") == "S4Net-Lite0 (real photos): instances"
    assert title("baseline/saliency") == "baseline S4Net: saliency"
    assert title("whole_image").startswith("trivial: whole image")
    assert title("unknown_thing") == "unknown_thing"


def test_summary_keeps_each_labellers_numbers():
    scores = {"lite0/instances": {"images": 16, "mIoU": 0.5, "mIoU_ignore_as_background": 0.55, "coverage": 0.9},
              "whole_image": {"images": 8, "mIoU": 0.06, "mIoU_ignore_as_background": 0.07, "coverage": 0.5}}
    summary = realphoto_summary(scores, {"centre_box_prior": {"mean_iou": 0.3, "images": 10}},
                                {"lite0": {"mAP@0.5": 0.4}})
    rows = {r["labeller"]: r for r in summary["voc_pseudo_labels"]["rows"]}
    assert rows["lite0/instances"]["mIoU_ignore_as_background"] == 0.55
    assert rows["whole_image"]["images"] == 8
    assert summary["salient_object_iou"]["centre_box_prior"]["mean_iou"] == 0.3
    assert summary["s4net"]["lite0"]["mAP@0.5"] == 0.4


def test_sheet_has_a_row_per_image_and_a_column_per_labeller(tmp_path):
    ids = _voc(tmp_path / "voc")
    sheet = label_sheet(tmp_path / "voc", ids, {"truth_again": tmp_path / "voc" / "SegmentationClass",
                                                "missing": tmp_path / "none"})
    assert sheet.height >= len(ids) * TILE_HEIGHT
    pixels = np.asarray(sheet)
    # four columns: image, truth, and the two labellers, each at least one tile wide
    assert sheet.width >= 4 * TILE_HEIGHT
    assert pixels.std() > 0


def test_cli_writes_summary_table_and_sheet(tmp_path):
    ids = _voc(tmp_path / "voc")
    gt = tmp_path / "voc" / "SegmentationClass"
    score = tmp_path / "score.json"
    assert wsss(["score", "--pred", str(gt), "--gt", str(gt), "--ids", str(tmp_path / "voc" / "ids.txt"),
                 "--out", str(score), "-q"]) == 0
    out = tmp_path / "report"
    assert wsss(["realphoto-report", "--scores", f"lite0/instances={score}", "--labels", f"lite0/instances={gt}",
                 "--voc-root", str(tmp_path / "voc"), "--ids", str(tmp_path / "voc" / "ids.txt"),
                 "--out", str(out), "-q"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["voc_pseudo_labels"]["rows"][0]["mIoU"] == 1.0
    assert summary["voc_pseudo_labels"]["rows"][0]["images"] == len(ids)
    assert "S4Net-Lite0 (real photos): instances | 100.0" in (out / "tables.md").read_text()
    assert Image.open(out / "label_sheet.jpg").format == "JPEG"


def test_workflow_plans_the_real_photo_run(tmp_path):
    """realphoto.yaml replaces the default target; a baseline S4Net adds its rows."""
    snakemake = Path(sys.executable).with_name("snakemake")
    baseline = tmp_path / "baseline.pt"
    baseline.write_bytes(b"x")
    (tmp_path / "voc2012_seg16").mkdir()
    (tmp_path / "imagenet_voc_classes").mkdir()
    config = tmp_path / "extra.yaml"
    config.write_text(f"results: {tmp_path / 'out'}\nrealphoto:\n  baseline_s4net: {baseline}\n"
                      f"  realdata: {tmp_path}\n")
    done = subprocess.run([str(snakemake), "-n", "--quiet", "rules", "--configfile",
                           "workflows/configs/realphoto.yaml", str(config)],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    plan = done.stdout + done.stderr
    for rule in ("realphoto_train_s4net", "realphoto_labels", "realphoto_sod_iou", "realphoto_train_cam"):
        assert rule in plan
    assert "train_segmenter" not in plan and "demo_data" not in plan
    counts = {line.split()[0]: int(line.split()[1]) for line in plan.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert counts["realphoto_labels"] == 9  # 7 labellers, plus the baseline S4Net's instances and saliency
    assert counts["realphoto_sod_iou"] == 3 and counts["realphoto_instance_classifier"] == 2
