"""The benchmark helpers and scripts run and report what they say (not their speed: that is bench/'s job)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_peak_memory_is_that_of_the_work_in_a_fresh_process() -> None:
    from helpers import hold_mib

    from bench.memory import peak_rss_mib

    small, large = peak_rss_mib(hold_mib, 10), peak_rss_mib(hold_mib, 300)
    assert large["work_rss_mib"] >= 250 and small["work_rss_mib"] < 100
    assert large["peak_rss_mib"] >= large["start_rss_mib"] + 250


@pytest.mark.slow  # 3-4 minutes: every precision of both models in fresh processes
def test_train_step_bench_times_s4net_and_its_peer(tmp_path: Path) -> None:
    out = tmp_path / "step.json"
    result = subprocess.run([sys.executable, "-m", "bench.train_step", "--size", "64", "--batch", "2",
                             "--repeats", "1", "--warmup", "0", "--threads", "1", "--peer", "--out", str(out)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [run["precision"] for run in report["runs"]] == ["fp32", "bf16", "maskrcnn fp32", "maskrcnn bf16"]
    assert all(run["median_s"] > 0 and run["peak_rss_mib"] > run["start_rss_mib"] > 0 for run in report["runs"])
    assert set(report["maskrcnn_step_over_s4net"]) == {"fp32", "bf16"}


@pytest.mark.slow
def test_ddp_scaling_bench_reports_one_and_two_processes(tmp_path: Path) -> None:
    out = tmp_path / "ddp.json"
    result = subprocess.run([sys.executable, "-m", "bench.ddp_scaling", "--trainers", "cam", "--iterations", "4",
                             "--warmup", "1", "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    (row,) = report["trainers"]
    assert row["trainer"] == "cam" and row["one"]["processes"] == 1 and row["many"]["processes"] == 2
    assert row["one"]["images_per_s"] > 0 and row["many"]["images_per_s"] > 0
    assert row["efficiency"] == pytest.approx(row["many"]["images_per_s"] / (2 * row["one"]["images_per_s"]), rel=0.01)


@pytest.mark.slow  # a minute or two: three precisions of a small S4Net, one step each
def test_train_step_bench_times_each_precision_with_the_engines_step(tmp_path: Path) -> None:
    """float16 runs the engine's GradScaler (here on the CPU); --skip-memory leaves the fresh processes out."""
    config = tmp_path / "small.yaml"
    config.write_text("backbone: resnet18\nnorm: bn\nfpn_channels: 32\nhead_channels: 32\ncompress_channels: 16\n"
                      "branch_channels: [16, 8]\n")
    out = tmp_path / "step.json"
    result = subprocess.run([sys.executable, "-m", "bench.train_step", "--model-config", str(config), "--size", "64",
                             "--batch", "2", "--repeats", "1", "--warmup", "0", "--threads", "1", "--device", "cpu",
                             "--precisions", "fp32", "bf16", "fp16", "--channels-last", "--skip-memory", "--out",
                             str(out)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [run["precision"] for run in report["runs"]] == ["fp32", "bf16", "fp16", "fp32 channels-last",
                                                            "bf16 channels-last", "fp16 channels-last"]
    assert set(report["channels_last_speedup"]) == {"fp32", "bf16", "fp16"}
    assert all(run["images_per_s"] > 0 and "peak_rss_mib" not in run for run in report["runs"])
    assert set(report["speedup_over_fp32"]) == {"bf16", "fp16"} and report["amp_resolves_to"] == "float32"
    assert "memory_note" not in report


@pytest.mark.slow  # about a minute: DeepLabv3 steps on random tensors and through train_segmenter
def test_segmenter_step_bench_takes_the_architecture(tiny_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "segmenter.json"
    result = subprocess.run([sys.executable, "-m", "bench.segmenter_step", "--world", str(tiny_world), "--arch",
                             "deeplabv3", "--encoder", "resnet18", "--batch-size", "2", "--crop", "64", "--steps", "1",
                             "--warmup", "0", "--threads", "1", "--device", "cpu", "--amp", "--skip-memory", "--out",
                             str(out)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["arch"] == "deeplabv3" and report["precision"] == "float32"  # --amp: CUDA only
    assert report["real_loop_images_per_s"] > 0 and report["model_step_images_per_s"]["mean"] > 0
    assert "peak_rss_mib" not in report and "peak_gpu_mib" not in report
