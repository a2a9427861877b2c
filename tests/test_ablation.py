"""Ablation tables (s4net.ablation, `s4net ablation-table`) and the `experiments` target of the workflow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from s4net.ablation import markdown, study_table

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def metrics(map50: float, map70: float, speed: float = 10.0) -> dict:
    return {"mAP50": map50, "mAP70": map70, "mAP50_occluded": map50 - 0.1, "mAP70_occluded": map70 - 0.1,
            "images_per_s": speed}


def test_rows_are_mean_and_sample_std_over_seeds_and_the_ranking_is_compared() -> None:
    runs = {"binary": [metrics(0.80, 0.50), metrics(0.84, 0.54)], "ternary": [metrics(0.90, 0.60), metrics(0.86, 0.56)],
            "expanded": [metrics(0.95, 0.70)]}
    paper = {"binary": {"mAP50": 85.5, "mAP70": 62.4}, "ternary": {"mAP50": 86.7, "mAP70": 63.6}}
    table = study_table("masking", runs, paper)
    rows = {row["variant"]: row for row in table["rows"]}
    assert rows["binary"]["mean"]["mAP50"] == pytest.approx(0.82)
    assert rows["binary"]["std"]["mAP50"] == pytest.approx(0.0282843, abs=1e-6)  # sample std of 0.80, 0.84
    assert rows["expanded"]["std"]["mAP50"] == 0.0 and rows["expanded"]["paper"] == {}
    assert table["ranking_mAP50"] == {"ours": ["ternary", "binary"], "paper": ["ternary", "binary"]}
    assert table["ranking_matches"] is True  # expanded has no paper value, so it is left out of the comparison
    text = markdown(table)
    assert "| binary | 2 | 82.0 ± 2.8 | 52.0 ± 2.8 |" in text and "| 85.5 | 62.4 |" in text
    assert "the same order" in text
    flipped = study_table("masking", {"binary": [metrics(0.9, 0.6)], "ternary": [metrics(0.8, 0.5)]}, paper)
    assert flipped["ranking_matches"] is False and "not the paper's order" in markdown(flipped)


def test_cli_reads_runs_and_the_paper_file(tmp_path: Path) -> None:
    paths = []
    for variant, value in (("0", 0.7), ("1/3", 0.8), ("1/3", 0.9)):
        path = tmp_path / f"m{len(paths)}.json"
        path.write_text(json.dumps(metrics(value, value - 0.2)))
        paths.append(f"{variant}={path}")
    result = subprocess.run([str(BIN / "s4net"), "ablation-table", "--study", "alpha", "--runs", *paths, "--paper",
                             str(REPO / "workflows" / "configs" / "paper_tables.yaml"), "--out", str(tmp_path / "t.json"),
                             "--markdown", str(tmp_path / "t.md")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    table = json.loads((tmp_path / "t.json").read_text())
    assert [r["seeds"] for r in table["rows"]] == [1, 2] and table["ranking_matches"] is True
    assert "| 1/3 | 2 | 85.0 ± 7.1 |" in (tmp_path / "t.md").read_text()
    bad = subprocess.run([str(BIN / "s4net"), "ablation-table", "--study", "alpha", "--runs", "0",
                          "--out", str(tmp_path / "x.json")], capture_output=True, text=True)
    assert bad.returncode == 2 and "expected VARIANT=METRICS_JSON" in bad.stderr


def test_experiments_target_plans_each_distinct_run_once(tmp_path: Path) -> None:
    result = subprocess.run([str(BIN / "snakemake"), "experiments", "--directory", str(REPO), "--dry-run", "--cores", "2",
                             "--configfile", str(REPO / "workflows" / "configs" / "demo.yaml"),
                             "--config", f"results={tmp_path}"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    counts = dict(line.split() for line in result.stdout.splitlines()
                  if line.split()[:1] and line.split()[0].startswith("experiment") and len(line.split()) == 2)
    # 5 maskings + 6 alphas + 4 backbones = 15 variants, 13 distinct runs (ternary, 1/3, resnet50 are one), x 3 seeds
    assert counts["experiment_train"] == "39" and counts["experiment_evaluate"] == "39"
    assert counts["experiment_table"] == "3"


TINY = """\
experiments:
  scale: tiny
  seeds: [0, 1]
  model_config: MODEL
  base_backbone: resnet18
  size: 64
  iterations: 4
  batch_size: 2
  lr_steps: [3]
  warmup: 1
  cpu_bf16: "off"
  masking: [binary, ternary]
  alpha: ["0", "1/3"]
  backbone: []
"""


@pytest.mark.slow
def test_tiny_experiments_run_end_to_end(tmp_path: Path) -> None:
    (tmp_path / "model.yaml").write_text("norm: bn\nfpn_channels: 32\nhead_channels: 32\ncompress_channels: 16\n"
                                         "branch_channels: [16, 8]\n")
    (tmp_path / "exp.yaml").write_text(TINY.replace("MODEL", str(tmp_path / "model.yaml")))
    result = subprocess.run([str(BIN / "snakemake"), "experiments", "--directory", str(REPO), "--cores", "2",
                             "--configfile", str(REPO / "workflows" / "configs" / "demo.yaml"), str(tmp_path / "exp.yaml"),
                             "--config", f"results={tmp_path / 'out'}"], capture_output=True, text=True, cwd=REPO,
                            env={"PATH": f"{BIN}:/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    masking = json.loads((tmp_path / "out" / "experiments" / "masking.json").read_text())
    alpha = json.loads((tmp_path / "out" / "experiments" / "alpha.json").read_text())
    assert [r["seeds"] for r in masking["rows"]] == [2, 2]
    ternary = next(r for r in masking["rows"] if r["variant"] == "ternary")
    third = next(r for r in alpha["rows"] if r["variant"] == "1/3")
    assert ternary["mean"] == third["mean"]  # one shared run
    assert "Ranking by mAP@0.5" in (tmp_path / "out" / "experiments" / "alpha.md").read_text()
    assert not (tmp_path / "out" / "experiments" / "backbone.md").exists()  # an empty study is skipped
    assert len(list((tmp_path / "out" / "experiments" / "gradient_maps").glob("*.png"))) == 8  # Fig. 6, binary vs ternary
