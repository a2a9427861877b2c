"""bench/gpu_check.sh: its helper's parts (quick), and the whole script at its tiny size on the CPU (slow), so the
GPU check cannot rot between the rare runs on a GPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.sh"
STEPS = ["env", "cuda_tests", "speed", "world", "train_step", "segmenter_step", "s4net_train", "s4net_resume",
         "s4net_evaluate_device", "s4net_evaluate_cpu", "instance_classifier", "proxy_labels", "proxy_labels_crf",
         "train_segmenter", "evaluate_segmenter"]


def record(tmp_path: Path, name: str, status: str, seconds: float, limit: float, results: str = "-",
           device: str = "cpu") -> dict:
    """Record one step through the helper and return the summary it rewrote."""
    from bench.gpu_check_helper import main

    assert main(["record", "--steps", str(tmp_path / "steps.jsonl"), "--out", str(tmp_path / "summary.json"),
                 "--device", device, "--size", "tiny", "--budget", "60", "--started", "now", "--log", "log",
                 "--name", name, "--status", status, "--seconds", str(seconds), "--limit", str(limit),
                 "--results", results, "--command", f"run {name}"]) == 0
    return json.loads((tmp_path / "summary.json").read_text())


JUNIT_ALL_SKIPPED = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="2">
<testcase classname="tests.cuda.test_a" name="test_one"><skipped type="pytest.skip" message="needs a CUDA GPU"/>
</testcase><testcase classname="tests.cuda.test_a" name="test_two"><skipped message="needs a CUDA GPU"/></testcase>
</testsuite></testsuites>"""


def test_each_step_keeps_the_results_it_had_when_it_ran(tmp_path: Path) -> None:
    results = tmp_path / "bench.json"
    results.write_text(json.dumps({"images_per_s": 1.5}))
    record(tmp_path, "first", "0", 2.0, 10, f"json:{results}")
    results.write_text(json.dumps({"images_per_s": 9.0}))  # a later step rewrites the file
    summary = record(tmp_path, "second", "0", 1.0, 10, f"json:{results}")
    assert [s["results"]["images_per_s"] for s in summary["steps"]] == [1.5, 9.0]
    assert [s["status"] for s in summary["steps"]] == ["passed", "passed"]
    assert summary["seconds"] == 3.0 and not summary["finished"] and not summary["ok"]


def test_statuses_and_when_the_summary_is_ok(tmp_path: Path) -> None:
    from bench.gpu_check_helper import main

    junit = tmp_path / "cuda.xml"
    junit.write_text(JUNIT_ALL_SKIPPED)
    record(tmp_path, "cuda_tests", "0", 3.0, 60, f"junit:{junit}")
    summary = record(tmp_path, "speed", "0", 3.0, 60, f"json:{tmp_path / 'never_written.json'}")
    cuda, speed = summary["steps"]
    assert cuda["status"] == "skipped" and cuda["results"]["skipped"] == 2 and cuda["results"]["tests"] == 2
    assert speed["status"] == "passed" and speed["results"] is None and "was not written" in speed["results_problem"]
    common = ["--steps", str(tmp_path / "steps.jsonl"), "--out", str(tmp_path / "summary.json"), "--size", "tiny",
              "--budget", "60", "--started", "now", "--log", "log", "--finished"]
    assert main(["summary", "--device", "cpu", *common]) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["ok"]  # no GPU asked for: the cuda tests may skip
    assert main(["summary", "--device", "cuda", *common]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert not summary["ok"] and summary["not_ok"] == ["cuda_tests"]  # on a GPU they must run

    rows = tmp_path / "speed.json"
    rows.write_text(json.dumps({"runs": [{"model": "s4net", "batch": 1, "precision": "bf16", "median_s": 0.1},
                                         {"model": "maskrcnn", "batch": 8, "precision": "bf16", "error": "OOM"}]}))
    half = record(tmp_path, "half", "0", 1.0, 60, f"json:{rows}")["steps"][-1]  # exit 0, but a row failed
    assert half["status"] == "failed" and half["row_errors"] == ["maskrcnn (batch 8, bf16): OOM"]
    steps = {s["name"]: s["status"] for s in record(tmp_path, "slow", "124", 60.2, 60)["steps"]}
    steps |= {s["name"]: s["status"] for s in record(tmp_path, "broken", "1", 0.5, 60)["steps"]}
    steps |= {s["name"]: s["status"] for s in record(tmp_path, "late", "-", 0, 0)["steps"]}
    assert (steps["slow"], steps["broken"], steps["late"]) == ("timed_out", "failed", "not_run")


def test_preempt_stops_the_run_once_its_checkpoint_exists_and_wants_exit_75(tmp_path: Path) -> None:
    """The first half of the script's resume check: SIGTERM once last.pt appears, and the run must exit 75."""
    from bench.gpu_check_helper import main

    checkpoint = tmp_path / "last.pt"
    trainer = ("import pathlib, signal, sys, time\n"
               "signal.signal(signal.SIGTERM, lambda *_: sys.exit(int(sys.argv[2])))\n"
               "pathlib.Path(sys.argv[1]).touch()\n"
               "time.sleep(60)\n")
    assert main(["preempt", "--watch", str(checkpoint), "--", sys.executable, "-c", trainer, str(checkpoint),
                 "75"]) == 0
    checkpoint.unlink()
    # a run that dies of the signal instead of checkpointing, and one that ends before any checkpoint: both fail
    assert main(["preempt", "--watch", str(checkpoint), "--", sys.executable, "-c", trainer, str(checkpoint),
                 "1"]) == 1
    assert main(["preempt", "--watch", str(tmp_path / "never.pt"), "--", sys.executable, "-c", "pass"]) == 1


def test_the_script_refuses_bad_arguments_before_running_anything(tmp_path: Path) -> None:
    for args in (["--device", "tpu"], ["--size", "huge"], ["--budget", "soon"], ["--frobnicate"]):
        result = subprocess.run(["bash", str(SCRIPT), *args, "--out", str(tmp_path / "out")], capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 2, (args, result.stderr)
        assert not (tmp_path / "out").exists()
    usage = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 0 and "--device cuda|cpu" in usage.stdout


@pytest.mark.slow  # 5-11 minutes on this 2-core VM (every step: each bench, each CLI, at the tiny size)
def test_the_gpu_check_script_passes_on_the_cpu_at_its_tiny_size(tmp_path: Path) -> None:
    import torch

    out = tmp_path / "gpu_check"
    result = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--size", "tiny", "--out", str(out)],
                            capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHON": sys.executable})
    log = (out / "gpu_check.log").read_text() if (out / "gpu_check.log").exists() else "(no log)"
    summary = json.loads((out / "summary.json").read_text())
    steps = {step["name"]: step for step in summary["steps"]}
    assert list(steps) == STEPS
    not_passed = {name: step["status"] for name, step in steps.items() if step["status"] != "passed"}
    # the cuda tests run where torch sees a GPU, even with --device cpu; elsewhere they all skip
    expected = {} if torch.cuda.is_available() else {"cuda_tests": "skipped"}
    assert not_passed == expected, f"{result.stdout}\n{log[-6000:]}"
    assert summary["ok"] and summary["finished"] and result.returncode == 0, result.stdout

    assert steps["env"]["results"]["missing"] == [] and steps["env"]["results"]["device_asked"] == "cpu"
    assert steps["cuda_tests"]["results"]["tests"] > 0
    assert {run["batch"] for run in steps["speed"]["results"]["runs"] if "batch" in run} == {1}
    assert [run["precision"] for run in steps["train_step"]["results"]["runs"]] == ["fp32", "bf16"]
    assert steps["segmenter_step"]["results"]["arch"] == "deeplabv3"
    stopped, resumed = steps["s4net_train"]["results"], steps["s4net_resume"]["results"]
    assert 1 <= stopped["last_metrics"]["iteration"] < 6 and stopped["final"] == []  # preempted, no final model
    assert resumed["last_metrics"]["iteration"] == 6 and resumed["final"] == ["model_final.pt"]
    assert resumed["metrics_lines"] == 6
    assert summary["s4net_evaluate_device_minus_cpu"] == {key: 0.0 for key in
                                                          ("mAP50", "mAP70", "mAP50_occluded", "mAP70_occluded")}
    for name in ("proxy_labels", "proxy_labels_crf"):
        assert steps[name]["results"]["manifest_entries"] == steps[name]["results"]["label_pngs"] == 40
    assert steps["train_segmenter"]["results"]["final"] == ["model_final.pt"]
    assert 0 <= steps["evaluate_segmenter"]["results"]["mIoU"] <= 1
