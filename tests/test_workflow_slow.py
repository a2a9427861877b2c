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
"""


@pytest.mark.slow
@pytest.mark.parametrize("shards", [1, 2])  # one shard names its files without a shard part
def test_tiny_dag_runs_end_to_end(tmp_path: Path, shards: int) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY.replace("SHARDS", str(shards)))
    out = tmp_path / "out"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [str(BIN / "snakemake"), "--cores", "2", "--directory", str(REPO), "--configfile",
               str(REPO / "workflows" / "configs" / "demo.yaml"), str(tmp_path / "tiny.yaml"), "--config", f"results={out}"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    for source in ("instances", "saliency", "ground_truth"):
        metrics = json.loads((out / "segmenter" / source / "val_metrics.json").read_text())
        assert metrics["images"] == 16 and 0.0 <= metrics["mIoU"] <= 1.0
    for cue in ("instances", "saliency"):
        gathered = [json.loads(line) for line in (out / "proxy" / cue / "manifest.gathered.jsonl").read_text().splitlines()]
        assert sorted(r["image"] for r in gathered) == sorted(
            line.split(",")[0] for line in (out / "data" / "imagenet" / "keywords.csv").read_text().splitlines()[1:]
        )
        assert json.loads((out / "proxy" / cue / "scores.json").read_text())["images"] == 40
    assert (out / "provenance" / "pip_freeze.txt").read_text().strip()
    assert len(list((out / "benchmarks").glob("*.tsv"))) >= 10
    again = subprocess.run(command + ["--dry-run"], capture_output=True, text=True, cwd=REPO, env=env)
    assert "Nothing to be done" in again.stdout + again.stderr  # a rerun redoes nothing
