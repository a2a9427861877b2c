"""Load: proxy labels over thousands of tiny images finish with flat memory (slow; the bench writes the numbers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_proxy_labels_over_5000_images_keep_memory_flat(checkpoint: Path, tiny_world: Path, tmp_path: Path) -> None:
    out, classifier = tmp_path / "load.json", tmp_path / "classifier.pt"
    imagenet = tiny_world / "imagenet"
    made = subprocess.run([str(Path(sys.executable).parent / "wsss"), "instance-classifier", "--checkpoint",
                           str(checkpoint), "--images", str(imagenet), "--keywords", str(imagenet / "keywords.csv"),
                           "--out", str(classifier), "--score-threshold", "0", "-q"], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr[-2000:]
    result = subprocess.run([sys.executable, "-m", "bench.proxy_labels", "--world", str(tiny_world),
                             "--checkpoint", str(checkpoint), "--classifier", str(classifier), "--modes", "proxy",
                             "--counts", "500", "5000", "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [run["images"] for run in report["runs"]] == [5000, 500]  # every image labelled
    assert report["peak_rss_ratio_large_over_small"] < 1.15
