"""The whole DAG end to end on the tiny world (slow: run with ``pytest -m slow``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TINY = """\
demo_scale: tiny
s4net: {size: 64, iterations: 12, batch_size: 4, lr_steps: [8, 10], warmup: 2, cpu_bf16: "off"}
wsss:
  shards: SHARDS
  score_threshold: 0.0
  segmenter: {iterations: 4, batch_size: 2, crop: 48}
  cam: {size: 32, iterations: 2, batch_size: 2}
"""


def run_tiny_dag(tmp_path: Path, shards: int) -> tuple[Path, list[str], dict]:
    """The tiny DAG with this many proxy-label shards; its output folder, command and environment."""
    config = tmp_path / f"tiny{shards}.yaml"
    config.write_text(TINY.replace("SHARDS", str(shards)))
    out = tmp_path / f"out{shards}"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [str(BIN / "snakemake"), "--cores", "2", "--directory", str(REPO), "--configfile",
               str(REPO / "workflows" / "configs" / "demo.yaml"), str(config), "--config", f"results={out}"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, command, env


def label_checksums(out: Path, cue: str) -> dict[str, str]:
    lines = (out / "proxy" / cue / "manifest.gathered.jsonl").read_text().splitlines()
    return {record["image"]: record.get("sha256") for record in map(json.loads, lines)}


@pytest.mark.slow
def test_tiny_dag_runs_end_to_end_and_shards_gather_to_the_unsharded_labels(tmp_path: Path) -> None:
    outputs = {}
    for shards in (1, 2):  # one shard names its files without a shard part
        out, command, env = run_tiny_dag(tmp_path, shards)
        outputs[shards] = out
        for source in ("instances", "saliency", "cam_saliency", "ground_truth"):
            metrics = json.loads((out / "segmenter" / source / "val_metrics.json").read_text())
            assert metrics["images"] == 16 and 0.0 <= metrics["mIoU"] <= 1.0
        keywords = (out / "data" / "imagenet" / "keywords.csv").read_text().splitlines()[1:]
        for cue in ("instances", "saliency", "cam_saliency"):
            assert sorted(label_checksums(out, cue)) == sorted(line.split(",")[0] for line in keywords)
            assert json.loads((out / "proxy" / cue / "scores.json").read_text())["images"] == 40
        summary = json.loads((out / "report" / "summary.json").read_text())
        assert set(summary["segmenters"]) == {"instances", "saliency", "cam_saliency", "ground_truth"}
        assert {"proxy_overlays.png", "prediction_overlays.png", "runtimes.png"} <= set(summary["files"])
        assert summary["code"]["git"]  # the commit the numbers come from
        # the VOC pseudo-label protocol: every cue, and the saliency cues on oracle maps, scored on VOC train
        voc_rows = {row["labeller"]: row for row in summary["voc_pseudo_labels"]["rows"]}
        assert set(voc_rows) == {"instances", "saliency", "cam_saliency", "saliency+oracle", "cam_saliency+oracle"}
        voc_train = (out / "data" / "voc" / "VOC2012" / "ImageSets" / "Segmentation" / "train.txt").read_text()
        assert {row["images"] for row in voc_rows.values()} == {len(voc_train.split())}
        # oracle maps are the masks' union: what the saliency cue labels (single-tag images) is right
        assert voc_rows["saliency+oracle"]["mIoU_labelled"] > 0.95, voc_rows["saliency+oracle"]
        assert (out / "voc_protocol" / "pseudo_labels.html").is_file()
        assert (out / "provenance" / "pip_freeze.txt").read_text().strip()
        assert len(list((out / "benchmarks").glob("*.tsv"))) >= 10
        again = subprocess.run(command + ["--dry-run"], capture_output=True, text=True, cwd=REPO, env=env)
        assert "Nothing to be done" in again.stdout + again.stderr  # a rerun redoes nothing
    for cue in ("instances", "saliency", "cam_saliency"):
        assert label_checksums(outputs[1], cue) == label_checksums(outputs[2], cue)
    report = tmp_path / "report.html"
    made = subprocess.run(command + ["--report", str(report)], capture_output=True, text=True, cwd=REPO, env=env)
    assert made.returncode == 0, made.stderr[-3000:]
    assert report.stat().st_size > 100_000  # self-contained: the pictures are inside
