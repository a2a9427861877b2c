"""wsss sod-iou: the salient-object IoU of S4Net's saliency and of the centre-box prior, on hand-made cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import s4net.checkpoint
import s4net.inference
from pipeline.cli import main as wsss
from pipeline.cues.keyword_assignment import AssignmentConfig
from pipeline.cues.saliency import saliency_map
from pipeline.cues.saliency_iou import centre_box, mask_iou
from s4net.inference import Detections


def _photo(root: Path, image_id: str, mask: np.ndarray) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((*mask.shape, 3), dtype=np.uint8)).save(root / "images" / f"{image_id}.jpg")
    Image.fromarray(mask.astype(np.uint8) * 255).convert("1").save(root / "masks" / f"{image_id}.png")


def _args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["sod-iou", "--images", str(root / "images"), "--masks", str(root / "masks"), "--out", str(out), "-q",
            *extra]


def test_centre_box_is_the_middle_half() -> None:
    box = centre_box(4, 8)
    assert box.sum() == 8 and box[1:3, 2:6].all()
    assert centre_box(321, 481).mean() == pytest.approx(0.25, abs=0.01)
    assert mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0


def test_centre_box_prior_known_iou(tmp_path: Path) -> None:
    mask = np.zeros((4, 8), dtype=bool)
    mask[0:2, 0:4] = True  # meets the box (rows 1-2, columns 2-5) in 2 pixels: 2 / (8 + 8 - 2)
    _photo(tmp_path, "a", mask)
    _photo(tmp_path, "b", centre_box(4, 8))
    (tmp_path / "ids.txt").write_text("a\n")
    assert wsss(_args(tmp_path, tmp_path / "all.json", "--prior", "centre-box")) == 0
    summary = json.loads((tmp_path / "all.json").read_text())
    assert [r["iou"] for r in summary["rows"]] == [pytest.approx(1 / 7, abs=1e-6), 1.0]
    assert summary["mean_iou"] == pytest.approx((1 / 7 + 1) / 2, abs=1e-6)
    assert wsss(_args(tmp_path, tmp_path / "a.json", "--prior", "centre-box", "--ids", str(tmp_path / "ids.txt"))) == 0
    assert json.loads((tmp_path / "a.json").read_text())["images"] == 1


def test_saliency_map_is_the_union_of_salient_instances() -> None:
    masks = np.zeros((3, 4, 4), dtype=np.float32)
    masks[0, 0, :] = 0.9
    masks[1, 1, :] = 0.7
    masks[2, 2, :] = 1.0  # scores below the threshold: not salient
    detections = Detections("x", np.zeros((4, 4, 3), np.uint8), np.zeros((3, 4)), np.array([0.9, 0.6, 0.2]), masks)
    union = saliency_map(detections, AssignmentConfig(score_threshold=0.5))
    assert union[:, 0].tolist() == pytest.approx([0.9, 0.7, 0.0, 0.0])


def test_s4net_saliency_known_iou(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mask = np.zeros((4, 8), dtype=bool)
    mask[:, :4] = True
    _photo(tmp_path, "a", mask)
    (tmp_path / "model.pt").write_bytes(b"")
    probs = np.zeros((2, 4, 8), dtype=np.float32)
    probs[0, :, :2] = 0.8  # salient, inside the mask
    probs[1, :, 2:] = 0.9  # scores 0.3: left out

    class Model:
        def for_inference(self, min_score: float = 0.0) -> "Model":
            return self

    def detector(model, items, *args, **kwargs):
        for key, _ in items:
            yield Detections(key, np.zeros((4, 8, 3), np.uint8), np.zeros((2, 4)), np.array([0.7, 0.3]), probs)

    monkeypatch.setattr(s4net.checkpoint, "load_checkpoint", lambda *a, **k: Model())
    monkeypatch.setattr(s4net.inference, "run_detector", detector)
    assert wsss(_args(tmp_path, tmp_path / "s.json", "--checkpoint", str(tmp_path / "model.pt"), "--device",
                      "cpu")) == 0
    row = json.loads((tmp_path / "s.json").read_text())["rows"][0]
    assert row["iou"] == pytest.approx(0.5) and row["predicted_fraction"] == pytest.approx(0.25)


def test_missing_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "images").mkdir()
    assert wsss(_args(tmp_path, tmp_path / "x.json", "--prior", "centre-box")) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{tmp_path / 'masks'}: not a directory" in err
