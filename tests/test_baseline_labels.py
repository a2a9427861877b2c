"""wsss baseline-labels: whole-image and centre-box proxy labels from tags, exact on a tiny VOC layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.classes import CLASS_INDEX, voc_palette
from pipeline.cli import main as wsss


@pytest.fixture()
def voc(tmp_path: Path) -> Path:
    root = tmp_path / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    for name in ("2007_000001.jpg", "2007_000002.png", "2007_000003.jpg"):
        Image.fromarray(np.zeros((4, 8, 3), dtype=np.uint8)).save(root / "JPEGImages" / name)
    (tmp_path / "tags.csv").write_text("image,keywords\n2007_000001.jpg,cat\n2007_000002.png,dog person\n")
    (tmp_path / "ids.txt").write_text("2007_000001\n2007_000002\n2007_000003\n")
    return root


def _run(voc: Path, kind: str, out: Path, *extra: str) -> int:
    return wsss(["baseline-labels", "--kind", kind, "--voc-root", str(voc), "--tags", str(voc.parent / "tags.csv"),
                 "--out", str(out), "-q", *extra])


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "P" and image.getpalette()[:63] == voc_palette()[:63]
        return np.asarray(image)


def test_whole_image_labels(voc: Path, tmp_path: Path) -> None:
    assert _run(voc, "whole-image", tmp_path / "whole", "--ids", str(tmp_path / "ids.txt")) == 0
    assert (_read(tmp_path / "whole" / "2007_000001.png") == CLASS_INDEX["cat"]).all()
    assert (_read(tmp_path / "whole" / "2007_000002.png") == 255).all()  # two tags: no guess
    assert (_read(tmp_path / "whole" / "2007_000003.png") == 0).all()  # not in the tag table: no class


def test_centre_box_labels(voc: Path, tmp_path: Path) -> None:
    assert _run(voc, "centre-box", tmp_path / "box") == 0
    expected = np.zeros((4, 8), dtype=np.uint8)
    expected[1:3, 2:6] = CLASS_INDEX["cat"]
    assert np.array_equal(_read(tmp_path / "box" / "2007_000001.png"), expected)
    assert (_read(tmp_path / "box" / "2007_000002.png") == 255).all()
    assert not (tmp_path / "box" / "2007_000003.png").exists()  # without --ids: the table's images only


def test_missing_voc_root_is_one_line(voc: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _run(tmp_path / "absent", "whole-image", tmp_path / "o") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{tmp_path / 'absent'}: VOC root is not a directory" in err
