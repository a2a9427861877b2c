"""Ablation tables (s4net.reproduction.ablation, `s4net ablation-table`) and the `experiments` target of the
workflow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from s4net.reproduction.ablation import markdown, plot, study_table
from s4net.reproduction.variants import alpha_value

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
    # a subset of the metrics (mAP@0.5 always): here no images/s column, and none of the paper's
    only = study_table("masking", runs, {**paper, "binary": {"mAP50": 85.5, "images_per_s": 40.0}},
                       metrics=("mAP70",))
    assert only["metrics"] == ["mAP50", "mAP70"]
    assert all(set(row["mean"]) == {"mAP50", "mAP70"} for row in only["rows"])
    assert "images/s" not in markdown(only)
    assert "| binary | 2 | 82.0 ± 2.8 | 52.0 ± 2.8 | 85.5 | - |" in markdown(only)
    with pytest.raises(ValueError, match="unknown metrics"):
        study_table("masking", runs, paper, metrics=("fps",))


def seeded(seed: int, map50: float, occluded: float | None = None) -> dict:
    run = metrics(map50, map50 - 0.2)
    run["checkpoint"] = f"out/experiments/runs/v/seed{seed}/model_final.pt"
    if occluded is not None:
        run["mAP50_occluded"] = occluded
    return run


def test_differences_are_paired_by_seed_and_compared_with_their_spread() -> None:
    """The runs of one seed are compared with each other (seed 2's ternary with seed 2's binary, whatever order
    the files came in); a difference is larger than the spread when the seeds agree on its sign and its mean
    exceeds the std of the per-seed differences."""
    runs = {"ternary": [seeded(0, 0.80, 0.70), seeded(1, 0.70, 0.60), seeded(2, 0.90, 0.65)],
            "binary": [seeded(2, 0.88, 0.70), seeded(0, 0.77, 0.72), seeded(1, 0.66, 0.55)],
            "roialign": [seeded(0, 0.70), seeded(1, 0.69), seeded(2, 0.71)]}
    paper = {"ternary": {"mAP50": 86.7}, "binary": {"mAP50": 85.5}, "roialign": {"mAP50": 85.2}}
    table = study_table("masking", runs, paper)
    assert table["reference"] == "ternary"
    pairs = {(p["variant"], p["other"], p["metric"]): p for p in table["paired_reference"]}
    binary = pairs[("ternary", "binary", "mAP50")]
    assert binary["seeds"] == ["0", "1", "2"]
    assert binary["differences"] == pytest.approx([0.03, 0.04, 0.02])
    assert binary["mean"] == pytest.approx(0.03) and binary["std"] == pytest.approx(0.01)
    assert binary["t"] == pytest.approx(0.03 / (0.01 / 3 ** 0.5)) and binary["larger_than_spread"] is True
    occluded = pairs[("ternary", "binary", "mAP50_occluded")]
    assert occluded["differences"] == pytest.approx([-0.02, 0.05, -0.05]) and occluded["larger_than_spread"] is False
    # every seed agrees and the mean (10 points) is above the std of the differences (9): larger, if only just
    assert pairs[("ternary", "roialign", "mAP50")]["differences"] == pytest.approx([0.10, 0.01, 0.19])
    assert pairs[("ternary", "roialign", "mAP50")]["larger_than_spread"] is True
    adjacent = [(p["variant"], p["other"]) for p in table["paired_adjacent"]]
    assert adjacent == [("ternary", "binary"), ("binary", "roialign")]
    text = markdown(table)
    assert "| ternary - binary | mAP@0.5 | +3.0 ± 1.0 | +3.0, +4.0, +2.0 | yes |" in text
    assert "| ternary - binary | mAP_O@0.5 | -0.7 ± 5.1 | -2.0, +5.0, -5.0 | no |" in text
    # files without a seed folder pair by position; one seed has no spread to compare with
    lone = study_table("masking", {"ternary": [metrics(0.9, 0.6)], "binary": [metrics(0.8, 0.5)]}, paper)
    (first, _) = lone["paired_reference"]
    assert first["seeds"] == ["#0"] and first["std"] is None and first["larger_than_spread"] is False


def test_a_peer_is_compared_with_its_s4net_variant_and_kept_out_of_the_ranking() -> None:
    runs = {"binary": [metrics(0.80, 0.50)], "ternary": [metrics(0.90, 0.60, speed=20.0)],
            "Mask R-CNN": [metrics(0.95, 0.55, speed=5.0)]}
    paper = {"binary": {"mAP50": 85.5}, "ternary": {"mAP50": 86.7}, "Mask R-CNN": {"mAP50": 99.0}}
    table = study_table("masking", runs, paper, peers={"Mask R-CNN": "ternary"})
    assert table["ranking_mAP50"]["paper"] == ["ternary", "binary"] and table["ranking_matches"] is True
    (comparison,) = table["peers"]
    assert comparison["metrics"]["mAP50"] == {"s4net": 0.90, "peer": 0.95, "s4net_better": False}
    assert comparison["metrics"]["mAP70"]["s4net_better"] and comparison["metrics"]["images_per_s"]["s4net_better"]
    text = markdown(table)
    assert ("S4Net (ternary) against Mask R-CNN: wins on mAP@0.7 (60.0 vs 55.0), mAP_O@0.7 (50.0 vs 45.0), "
            "images/s (20.0 vs 5.0); loses on mAP@0.5 (90.0 vs 95.0), mAP_O@0.5 (80.0 vs 85.0).") in text
    with pytest.raises(ValueError, match="both must be variants"):
        study_table("masking", runs, paper, peers={"Mask R-CNN": "roialign"})


@pytest.mark.parametrize("study, variants", [("alpha", ["1/3", "0", "1"]), ("backbone", ["resnet50", "vgg16"]),
                                             ("masking", ["binary", "ternary"])])
def test_each_study_draws_a_png(tmp_path: Path, study: str, variants: list[str]) -> None:
    from PIL import Image

    runs = {v: [metrics(0.8 + 0.01 * i, 0.5), metrics(0.82 + 0.01 * i, 0.52)] for i, v in enumerate(variants)}
    table = study_table(study, runs, {variants[0]: {"mAP50": 86.7, "mAP70": 63.6}})
    plot(table, tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as image:
        assert image.format == "PNG" and image.size[0] > 400
        colours = image.convert("RGB").getcolors(1 << 20)
    assert len(colours) > 20  # something was drawn, not a blank canvas
    assert alpha_value("2/3") == pytest.approx(2 / 3) and alpha_value("vgg16") is None


def test_cli_reads_runs_and_the_paper_file(tmp_path: Path) -> None:
    paths = []
    for variant, value in (("0", 0.7), ("1/3", 0.8), ("1/3", 0.9)):
        path = tmp_path / f"m{len(paths)}.json"
        path.write_text(json.dumps(metrics(value, value - 0.2)))
        paths.append(f"{variant}={path}")
    result = subprocess.run([str(BIN / "s4net"), "ablation-table", "--study", "alpha", "--runs", *paths, "--paper",
                             str(REPO / "workflows" / "configs" / "paper_tables.yaml"), "--metrics", "mAP50", "mAP70",
                             "--out",
                             str(tmp_path / "t.json"), "--markdown", str(tmp_path / "t.md"), "--plot",
                             str(tmp_path / "t.png")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    table = json.loads((tmp_path / "t.json").read_text())
    assert [r["seeds"] for r in table["rows"]] == [1, 2] and table["ranking_matches"] is True
    assert table["metrics"] == ["mAP50", "mAP70"] and "images/s" not in (tmp_path / "t.md").read_text()
    assert "| 1/3 | 2 | 85.0 ± 7.1 |" in (tmp_path / "t.md").read_text()
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([str(BIN / "s4net"), "ablation-table", "--study", "alpha", "--runs", "0",
                          "--out", str(tmp_path / "x.json")], capture_output=True, text=True)
    assert bad.returncode == 2 and "expected VARIANT=METRICS_JSON" in bad.stderr


def test_experiments_target_plans_each_distinct_run_once(tmp_path: Path) -> None:
    result = subprocess.run([str(BIN / "snakemake"), "experiments", "--directory", str(REPO), "--dry-run",
                             "--cores", "2", "--configfile", str(REPO / "workflows" / "configs" / "demo.yaml"),
                             "--config", f"results={tmp_path}"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    counts = dict(line.split() for line in result.stdout.splitlines()
                  if line.split()[:1] and line.split()[0].startswith("experiment") and len(line.split()) == 2)
    # 5 maskings + 6 alphas + 4 backbones = 15 variants, 13 distinct runs (ternary, 1/3, resnet50 are one), x 3 seeds
    assert counts["experiment_train"] == "39" and counts["experiment_evaluate"] == "39"
    assert counts["experiment_table"] == "3"
    # Mask R-CNN peers: resnet50 (Table 1's and Table 3's, one run) and resnet101 (Table 3), x 3 seeds
    assert counts["experiment_peer_train"] == "6" and counts["experiment_peer_evaluate"] == "6"


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
                             "--configfile", str(REPO / "workflows" / "configs" / "demo.yaml"),
                             str(tmp_path / "exp.yaml"), "--config", f"results={tmp_path / 'out'}"],
                            capture_output=True, text=True, cwd=REPO, env={"PATH": f"{BIN}:/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    masking = json.loads((tmp_path / "out" / "experiments" / "masking.json").read_text())
    alpha = json.loads((tmp_path / "out" / "experiments" / "alpha.json").read_text())
    assert [(r["variant"], r["seeds"]) for r in masking["rows"]] == [("binary", 2), ("ternary", 2), ("Mask R-CNN", 2)]
    assert masking["peers"][0]["peer"] == "Mask R-CNN" and masking["peers"][0]["variant"] == "ternary"
    assert "S4Net (ternary) against Mask R-CNN" in (tmp_path / "out" / "experiments" / "masking.md").read_text()
    ternary = next(r for r in masking["rows"] if r["variant"] == "ternary")
    third = next(r for r in alpha["rows"] if r["variant"] == "1/3")
    assert ternary["mean"] == third["mean"]  # one shared run
    assert "Ranking by mAP@0.5" in (tmp_path / "out" / "experiments" / "alpha.md").read_text()
    assert (tmp_path / "out" / "experiments" / "alpha.png").stat().st_size > 1000
    assert not (tmp_path / "out" / "experiments" / "backbone.md").exists()  # an empty study is skipped
    # Fig. 6, binary vs ternary
    assert len(list((tmp_path / "out" / "experiments" / "gradient_maps").glob("*.png"))) == 8


def _experiments_plan(tmp_path: Path, *configs: Path) -> dict[str, str]:
    """Job counts of the experiments target's dry run with experiments_small.yaml and the given config files."""
    result = subprocess.run([str(BIN / "snakemake"), "experiments", "--directory", str(REPO), "--dry-run",
                             "--cores", "2", "--configfile",
                             str(REPO / "workflows" / "configs" / "experiments_small.yaml"), *map(str, configs),
                             "--config", f"results={tmp_path / 'out'}"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    return dict(line.split() for line in result.stdout.splitlines()
                if line.split()[:1] and line.split()[0].startswith("experiment") and len(line.split()) == 2)


def test_kept_runs_are_read_not_trained_again(tmp_path: Path) -> None:
    """A run whose metrics (and the gradient maps) sit in experiments.kept is not planned; the others are."""
    from s4net.reproduction.variants import variant_run

    kept = tmp_path / "kept"
    config = tmp_path / "kept.yaml"
    config.write_text(f"experiments:\n  kept: {kept}\n")
    # experiments_small.yaml: 10 distinct runs (5 maskings, 6 alphas, ternary = 1/3) x 3 seeds, no peers
    assert _experiments_plan(tmp_path, config)["experiment_train"] == "30"
    for variant, seed in (("binary", 0), ("roialign", 2)):
        metrics = kept / "runs" / variant_run("masking", variant, "resnet18") / f"seed{seed}" / "test_metrics.json"
        metrics.parent.mkdir(parents=True)
        metrics.write_text('{"mAP50": 0.5, "mAP70": 0.3}')
    (kept / "gradient_maps").mkdir()
    # an empty maps folder is not kept maps: the gradient maps still need binary's seed-0 checkpoint, trained again
    plan = _experiments_plan(tmp_path, config)
    assert plan["experiment_train"] == "29" and plan["experiment_evaluate"] == "28"
    assert plan["experiment_gradients"] == "1" and plan["experiment_table"] == "2"
    (kept / "gradient_maps" / "binary_vs_ternary.png").write_bytes(b"png")
    plan = _experiments_plan(tmp_path, config)
    assert plan["experiment_train"] == "28" and plan["experiment_evaluate"] == "28"
    assert "experiment_gradients" not in plan and plan["experiment_table"] == "2"


def test_keep_runs_copies_finished_runs_and_never_overwrites(tmp_path: Path) -> None:
    experiments, kept = tmp_path / "out" / "experiments", tmp_path / "kept"
    done = experiments / "runs" / "masking-binary" / "seed0" / "test_metrics.json"
    done.parent.mkdir(parents=True)
    done.write_text('{"mAP50": 0.5}')
    (experiments / "runs" / "masking-ternary" / "seed0").mkdir(parents=True)  # unfinished: no metrics yet
    (experiments / "runs" / "masking-ternary" / "seed0" / "last.pt").write_bytes(b"state")
    (experiments / "gradient_maps").mkdir()
    (experiments / "gradient_maps" / "maps.png").write_bytes(b"png")
    command = [sys.executable, str(REPO / "tools" / "keep_runs.py"), str(experiments), str(kept)]
    first = subprocess.run(command, capture_output=True, text=True)
    assert first.returncode == 0 and "copied 2, already kept 0" in first.stdout, first.stderr
    assert (kept / "runs" / "masking-binary" / "seed0" / "test_metrics.json").read_text() == '{"mAP50": 0.5}'
    assert not (kept / "runs" / "masking-ternary").exists()
    done.write_text('{"mAP50": 0.9}')  # a rerun that differs: the kept record stays
    second = subprocess.run(command, capture_output=True, text=True)
    assert "copied 0, already kept 1, differing (left as kept) 1" in second.stdout
    assert "differs from the kept" in second.stderr
    assert (kept / "runs" / "masking-binary" / "seed0" / "test_metrics.json").read_text() == '{"mAP50": 0.5}'
    missing = subprocess.run([sys.executable, str(REPO / "tools" / "keep_runs.py"), str(tmp_path / "nope"), str(kept)],
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "no such experiments folder" in missing.stderr
