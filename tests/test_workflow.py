"""The Snakemake workflow: dry-run plans of the demo and full configs, the schema, the SLURM profile, the report."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEMO = REPO / "workflows" / "configs" / "demo.yaml"
FULL = REPO / "workflows" / "configs" / "full.yaml"


def snakemake(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "snakemake"), "--directory", str(REPO), *args], capture_output=True, text=True,
                          cwd=REPO)


def planned_jobs(output: str) -> dict[str, list[str]]:
    """Rule name -> the resources line of each job a dry run plans."""
    jobs: dict[str, list[str]] = {}
    name = None
    for line in output.splitlines():
        if line.startswith(("rule ", "localrule ")):
            name = line.split()[1].rstrip(":")
            jobs.setdefault(name, [])
        elif name and line.strip().startswith("resources:"):
            jobs[name].append(line)
    return jobs


def placeholder_data(root: Path) -> Path:
    """Empty stand-ins for every path full.yaml names, and a config file pointing at them."""
    for folder in ("ilso/images", "imagenet/train", "VOC2012/JPEGImages", "VOC2012/SegmentationClass",
                   "VOC2012/ImageSets/Segmentation", "weights"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name in ("ilso/train.json", "ilso/test.json", "VOC2012/ImageSets/Segmentation/train.txt",
                 "weights/r50.pth", "weights/r101.pth"):
        (root / name).touch()
    config = root / "paths.yaml"
    config.write_text(json.dumps({
        "results": str(root / "out"),
        "data": {"salient_train": str(root / "ilso/train.json"), "salient_test": str(root / "ilso/test.json"),
                 "salient_images": str(root / "ilso/images"), "imagenet": str(root / "imagenet"),
                 "voc_root": str(root / "VOC2012")},
        "s4net": {"pretrained": str(root / "weights/r50.pth")},
        "wsss": {"segmenter": {"encoder_weights": str(root / "weights/r101.pth")},
                 "cam": {"pretrained": str(root / "weights/r50.pth")}},
    }))
    return config


def test_demo_config_plans_every_rule(tmp_path: Path) -> None:
    result = snakemake("--dry-run", "--cores", "1", "--configfile", str(DEMO), "--config",
                       f"results={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr
    jobs = planned_jobs(result.stdout + result.stderr)
    assert {"demo_data", "train_s4net", "evaluate_s4net", "instance_classifier", "train_cam", "proxy_labels",
            "gather_proxy_labels", "score_proxy_labels", "train_segmenter", "evaluate_segmenter", "report",
            "provenance"} <= set(jobs)
    assert len(jobs["proxy_labels"]) == 6 and len(jobs["train_segmenter"]) == 4  # 3 cues x 2 shards; 4 label sources
    assert all(f"cue=cam_saliency, shard={i}" in result.stdout + result.stderr for i in (0, 1))


def test_full_config_plans_the_paper_dag_on_placeholder_paths(tmp_path: Path) -> None:
    paths = placeholder_data(tmp_path)
    result = snakemake("--dry-run", "--printshellcmds", "--cores", "8", "--configfile", str(FULL), str(paths))
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    jobs = planned_jobs(output)
    # real data: no generator, no proxy ground truth
    assert "demo_data" not in jobs and "score_proxy_labels" not in jobs
    assert len(jobs["imagenet_keywords"]) == 1 and len(jobs["proxy_labels"]) == 48  # keywords from wnids; 3 cues x 16
    for rule in ("train_s4net", "train_cam", "proxy_labels", "train_segmenter"):
        assert all("gpu=1" in line for line in jobs[rule]), rule
    s4net_train = [line for line in output.splitlines() if "s4net train " in line]
    assert s4net_train and not any("--backbone" in line for line in s4net_train)  # the model config decides it
    assert "s4net_r50_model.yaml" in output and "--pretrained" in output
    assert "--encoder resnet101" in output and "--arch deeplabv3 " in output
    reference = [line for line in output.splitlines() if "train-segmenter" in line and "ground_truth" in line][0]
    assert "VOC2012/SegmentationClass" in reference and "ImageSets/Segmentation/train.txt" in reference


def test_voc_protocol_plans_a_labeller_per_saliency_source_and_can_be_left_out(tmp_path: Path) -> None:
    """wsss.voc_protocol: every cue, saliency+NAME and cam_saliency+NAME per outside map folder (and the oracle);
    enabled: false takes it out of the default target."""
    maps = tmp_path / "pfan"
    maps.mkdir()
    given = tmp_path / "maps.yaml"
    given.write_text(json.dumps({"wsss": {"voc_protocol": {"saliency_maps": {"pfan": str(maps)},
                                                           "saliency_threshold": 0.3}}}))
    result = snakemake("voc_pseudo_labels", "--dry-run", "--printshellcmds", "--cores", "1", "--configfile",
                       str(DEMO), str(given), "--config", f"results={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    labellers = set(re.findall(r"labeller=([\w+]+)", output))
    assert labellers == {"instances", "saliency", "cam_saliency", "saliency+oracle", "cam_saliency+oracle",
                         "saliency+pfan", "cam_saliency+pfan"}
    pfan = [line for line in output.splitlines() if "proxy-labels" in line and "saliency+pfan" in line]
    assert pfan and all(f"--saliency-maps {maps}" in line and "--saliency-threshold 0.3" in line
                        and "--checkpoint" not in line for line in pfan)
    given.write_text(json.dumps({"wsss": {"voc_protocol": {"enabled": False}}}))
    off = snakemake("--dry-run", "--cores", "1", "--configfile", str(DEMO), str(given), "--config",
                    f"results={tmp_path / 'o2'}")
    assert off.returncode == 0, off.stderr
    assert "voc_proxy_labels" not in planned_jobs(off.stdout + off.stderr)


def test_named_weight_sources_are_flags_not_input_files(tmp_path: Path) -> None:
    """pretrained/encoder_weights 'package' (EfficientNet-Lite0's) reach the commands and are not planned as files."""
    model = (REPO / "workflows" / "configs" / "s4net_demo_model.yaml").read_text()
    (tmp_path / "model.yaml").write_text(model.replace("backbone: resnet18", "backbone: efficientnet_lite0"))
    (tmp_path / "lite0.yaml").write_text(json.dumps({
        "s4net": {"pretrained": "package", "model_config": str(tmp_path / "model.yaml")},
        "wsss": {"cam": {"backbone": "efficientnet_lite0", "pretrained": "package"},
                 "segmenter": {"encoder": "efficientnet_lite0", "encoder_weights": "package"}},
    }))
    result = snakemake("--dry-run", "--printshellcmds", "--cores", "1", "--configfile", str(DEMO),
                       str(tmp_path / "lite0.yaml"), "--config", f"results={tmp_path / 'out'}")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "--model-config" in output and "--pretrained package" in output
    assert "--backbone efficientnet_lite0 --pretrained package" in output
    assert "--encoder efficientnet_lite0 --encoder-weights package" in output
    # wsss.cam.cpu_bf16 and wsss.segmenter.cpu_bf16 (auto by default) reach both trainers
    trainers = [line for line in output.splitlines() if "wsss train-cam" in line or "wsss train-segmenter" in line]
    assert len(trainers) == 5 and all("--cpu-bf16 auto" in line for line in trainers), trainers


def test_full_config_without_its_paths_names_the_missing_one(tmp_path: Path) -> None:
    (tmp_path / "unset.yaml").write_text("data: {salient_train: null, salient_test: null}\n")
    result = snakemake("--dry-run", "--cores", "1", "--configfile", str(FULL), str(tmp_path / "unset.yaml"),
                       "--config", f"results={tmp_path}")
    assert result.returncode != 0
    assert "data.salient_train must be set" in result.stdout + result.stderr


def test_full_config_with_a_missing_file_fails_before_any_job(tmp_path: Path) -> None:
    paths = placeholder_data(tmp_path)
    (tmp_path / "weights" / "r50.pth").unlink()
    result = snakemake("--dry-run", "--cores", "1", "--configfile", str(FULL), str(paths))
    assert result.returncode != 0
    assert "r50.pth" in result.stdout + result.stderr


def test_slurm_profile_plans_the_dag_with_the_declared_resources(tmp_path: Path) -> None:
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="the slurm extra is not installed")
    paths = placeholder_data(tmp_path)
    result = snakemake("--profile", str(REPO / "workflows" / "profiles" / "slurm"), "--dry-run",
                       "--configfile", str(FULL), str(paths))
    assert result.returncode == 0, result.stderr
    jobs = {rule: lines[0] for rule, lines in planned_jobs(result.stdout + result.stderr).items() if lines}
    assert "gpu=1" in jobs["train_s4net"] and "slurm_partition=CHANGE_ME_gpu_partition" in jobs["train_s4net"]
    assert "mem_mb=32000" in jobs["train_segmenter"] and "runtime=1440" in jobs["train_segmenter"]
    assert "slurm_account=CHANGE_ME_account" in jobs["report"] and "gpu" not in jobs["report"]
    assert "slurm_partition=CHANGE_ME_cpu_partition" in jobs["report"]


@pytest.mark.parametrize("bad, message", [
    ("colour: red\n", "'colour' was unexpected"),
    ("wsss:\n  shards: two\n", "'two' is not of type 'integer'"),
    ("wsss:\n  cues: [instances, clip]\n", "'clip' is not one of"),
    ("s4net:\n  size: 100\n", "100 is not a multiple of 32"),
    ("wsss:\n  segmenter: {cpu_bf16: sometimes}\n", "'sometimes' is not one of"),
    ("resources:\n  train_s4net: {runtime: 0}\n", "0 is less than the minimum of 1"),
    ("data:\n  voc: /data/VOC2012\n", "'voc' was unexpected"),
])
def test_config_schema_rejects_bad_configs_before_any_job(tmp_path: Path, bad: str, message: str) -> None:
    (tmp_path / "bad.yaml").write_text(bad)
    result = snakemake("--dry-run", "--cores", "1", "--configfile", str(DEMO), str(tmp_path / "bad.yaml"),
                       "--config", f"results={tmp_path / 'out'}")
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def _fake_run(root: Path) -> dict[str, Path]:
    """Metrics files as the DAG writes them, with known numbers, plus tiny label folders."""
    from pipeline.classes import VOC_CLASSES
    from pipeline.datasets.voc import write_voc_label
    from s4net.io.images import save_image

    (root / "s4net.json").write_text(json.dumps({"mAP50": 0.8627, "mAP70": 0.6258, "mAP50_occluded": 0.7576,
                                                "mAP70_occluded": 0.4018, "images": 60, "occluded_images": 32}))
    segmenters = {}
    for k, source in enumerate(("instances", "saliency", "ground_truth")):
        per_class = {name: (0.5 + 0.02 * k) for name in VOC_CLASSES}
        path = root / f"{source}.json"
        path.write_text(json.dumps({"mIoU": 0.5 + 0.02 * k, "per_class_iou": per_class, "images": 3}))
        segmenters[source] = path
    rng = np.random.default_rng(0)
    voc = root / "VOC2012"
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("a\nb\nc\n")
    for image_id in "abc":
        save_image(voc / "JPEGImages" / f"{image_id}.jpg", rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
        write_voc_label(voc / "SegmentationClass" / f"{image_id}.png", rng.integers(0, 3, (24, 32)).astype(np.uint8))
        for source in segmenters:
            write_voc_label(root / "pred" / source / f"{image_id}.png", np.full((24, 32), 1, np.uint8))
    (root / "bench").mkdir()
    (root / "bench" / "train_s4net.tsv").write_text("s\th:m:s\tmax_rss\n569.1\t0:09:29\t1500.5\n")
    (root / "bench" / "report.tsv").write_text("s\th:m:s\tmax_rss\n2.0\t0:00:02\tNA\n")
    return {"voc": voc, **segmenters}


def test_report_tables_show_the_metrics_they_were_given(tmp_path: Path) -> None:
    from pipeline.reporting.report import ReportInputs, build_report

    files = _fake_run(tmp_path)
    scores = tmp_path / "proxy_scores.json"  # as `wsss score` writes them
    scores.write_text(json.dumps({"mIoU": 0.862, "mIoU_labelled": 0.922, "coverage": 0.936, "images": 600}))
    inputs = ReportInputs(
        s4net_metrics=tmp_path / "s4net.json", out=tmp_path / "report", proxy_scores={"instances": scores},
        segmenter_metrics={s: files[s] for s in ("instances", "saliency", "ground_truth")},
        predictions={s: tmp_path / "pred" / s for s in ("instances", "saliency", "ground_truth")},
        voc_root=files["voc"], benchmarks=tmp_path / "bench", samples=2,
    )
    summary = build_report(inputs)
    out = tmp_path / "report"
    assert {"s4net_map.html", "miou.html", "per_class_iou.png", "prediction_overlays.png", "runtimes.png",
            "runtimes.html"} <= set(summary["files"])
    assert "proxy_overlays.png" not in summary["files"]  # no proxy labels given
    s4net = (out / "s4net_map.html").read_text()
    assert "86.3" in s4net and "62.6" in s4net and "75.8" in s4net and "40.2" in s4net
    miou = (out / "miou.html").read_text()
    assert "50.0" in miou and "52.0" in miou and "54.0" in miou and "0.926" in miou  # 0.50 / 0.54 of full
    runtimes = (out / "runtimes.html").read_text()
    assert "569.1" in runtimes and "1500" in runtimes and "n/a" in runtimes
    written = json.loads((out / "summary.json").read_text())
    assert written["segmenters"]["saliency"]["mIoU"] == pytest.approx(0.52)
    assert written["proxy_labels"] == {"instances": {"mIoU": 0.862, "mIoU_labelled": 0.922, "coverage": 0.936,
                                                     "images": 600}}
    assert "86.2" in miou  # the proxy-label column
    from PIL import Image

    with Image.open(out / "prediction_overlays.png") as sheet:
        assert sheet.size[0] > 4 * 100 and sheet.size[1] > 2 * 100  # 2 rows of image, ground truth, 3 predictions


def test_report_cli_refuses_a_malformed_name_path_pair(tmp_path: Path) -> None:
    result = subprocess.run([str(BIN / "wsss"), "report", "--s4net-metrics", str(tmp_path / "m.json"),
                             "--segmenter", "instances", "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "expected NAME=PATH, got 'instances'" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    (tmp_path / "m.json").write_text("{not json")
    broken = subprocess.run([str(BIN / "wsss"), "report", "--s4net-metrics", str(tmp_path / "m.json"),
                             "--segmenter", f"instances={tmp_path / 'm.json'}", "--out", str(tmp_path / "r")],
                            capture_output=True, text=True)
    assert broken.returncode == 2 and "m.json: not a readable metrics json" in broken.stderr
    assert not (tmp_path / "r").exists()  # nothing made for input that does not load


def test_lint_finds_nothing_but_the_missing_conda_environments(tmp_path: Path) -> None:
    """`snakemake --lint` on the demo config; per-rule conda/containers are not used (the venv holds everything)."""
    result = snakemake("--lint", "--configfile", str(DEMO), "--config", f"results={tmp_path / 'out'}")
    output = result.stdout + result.stderr
    assert "Lints for rule train_s4net" in output, output[-2000:]  # the linter ran over the rules
    findings = {line.strip() for line in output.splitlines() if line.startswith("    * ")}
    assert findings <= {"* Specify a conda environment or container for each rule.:"}, findings


def test_schema_choices_are_the_packages() -> None:
    """The config schema offers exactly the cues, architectures, backbones and maskings the code builds."""
    import yaml

    from pipeline.cues import CUES
    from pipeline.cues.cam_config import CAM_BACKBONES
    from pipeline.segmenter.config import ARCHITECTURES
    from s4net.config import BACKBONES, MASKINGS

    schema = yaml.safe_load((REPO / "workflows" / "schemas" / "config.schema.yaml").read_text())["properties"]
    wsss, experiments = schema["wsss"]["properties"], schema["experiments"]["properties"]
    assert wsss["cues"]["items"]["enum"] == list(CUES)
    assert wsss["segmenter"]["properties"]["arch"]["enum"] == list(ARCHITECTURES)
    assert wsss["cam"]["properties"]["backbone"]["enum"] == list(CAM_BACKBONES)
    assert sorted(experiments["masking"]["items"]["enum"]) == sorted(MASKINGS)
    assert experiments["backbone"]["items"]["enum"] == experiments["base_backbone"]["enum"] == list(BACKBONES)
