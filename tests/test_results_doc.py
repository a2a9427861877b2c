"""docs/RESULTS.md: every command it names exists (a bench module, a workflow target, a make target)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def commands() -> list[list[str]]:
    text = (REPO / "docs" / "RESULTS.md").read_text()
    spans = re.findall(r"`([^`]+)`", text)
    return [shlex.split(span) for span in spans if span.split()[0] in ("python", "snakemake", "make")]


def test_results_doc_names_commands_that_exist() -> None:
    found = commands()
    assert len(found) >= 6, found
    rules = "\n".join(p.read_text() for p in [REPO / "Snakefile", *(REPO / "workflows" / "rules").glob("*.smk")])
    makefile = (REPO / "Makefile").read_text()
    for words in found:
        if words[0] == "python":
            module = words[2] if words[1] == "-m" else None
            path = REPO / (module.replace(".", "/") + ".py" if module else words[1])
            assert path.is_file(), words
        elif words[0] == "snakemake":
            target = words[1]
            assert re.search(rf"^rule {re.escape(target)}\b", rules, re.M), words
        else:
            assert re.search(rf"^{re.escape(words[1])}:", makefile, re.M), words


def test_results_doc_numbers_match_the_committed_bench_json() -> None:
    """The speed and throughput rows quote the JSON the commands wrote."""
    import json

    text = (REPO / "docs" / "RESULTS.md").read_text()
    speed = {run["model"]: run
             for run in json.loads((REPO / "bench" / "results" / "speed_cpu.json").read_text())["runs"]}
    assert f"| {speed['torchvision maskrcnn_resnet50_fpn']['median_s']:.3f} |" in text
    assert f"| {speed['s4net resnet50 [proposals: random-weight head]']['median_s']:.3f} |" in text
    proxy = json.loads((REPO / "bench" / "results" / "proxy_labels_cpu.json").read_text())["runs"]
    for run in proxy[:3]:
        assert f"| {run['images_per_s']:.1f} | {run['peak_rss_mib']:.0f} |" in text, run["mode"]


def test_results_doc_peer_rows_match_the_committed_bench_json() -> None:
    """The Mask R-CNN peer rows (accuracy at the same budget, training step) quote the JSON their commands wrote."""
    import json

    text = (REPO / "docs" / "RESULTS.md").read_text()
    peer = json.loads((REPO / "bench" / "results" / "peer_accuracy_cpu.json").read_text())
    for run in peer["runs"].values():
        cells = [f"{100 * run[k]:.1f}" for k in ("mAP50", "mAP70", "mAP50_occluded", "mAP70_occluded")]
        assert "| " + " | ".join(cells) + f" | {run['images_per_s']:.1f} |" in text, run
    step = json.loads((REPO / "bench" / "results" / "train_step_cpu.json").read_text())
    times = {run["precision"]: run["median_s"] for run in step["runs"]}
    assert f"| {times['fp32']:.3f} | {times['bf16']:.3f} |" in text
    assert f"| {times['maskrcnn fp32']:.2f} | {times['maskrcnn bf16']:.2f} |" in text
    assert "PEER_" not in text and "STEP_ROWS" not in text


def test_results_doc_table5_quotes_the_committed_demo_report() -> None:
    """The Table 5 analogue quotes the demo DAG's report (its summary.json, committed as bench/results/demo_summary.json)."""
    import json

    text = (REPO / "docs" / "RESULTS.md").read_text()
    summary = json.loads((REPO / "bench" / "results" / "demo_summary.json").read_text())
    full = summary["segmenters"]["ground_truth"]["mIoU"]
    for cue in ("saliency", "cam_saliency", "instances"):
        proxy, miou = summary["proxy_labels"][cue], summary["segmenters"][cue]["mIoU"]
        cells = (f"| {100 * proxy['mIoU']:.1f} ({100 * proxy['mIoU_labelled']:.1f} on {100 * proxy['coverage']:.1f}%) "
                 f"| {100 * miou:.1f} | {miou / full:.3f} |")
        assert cells in text, cue
    assert f"| {100 * full:.1f} | 1.000 |" in text
    s4net = summary["s4net"]
    assert (f"mAP@0.5 {100 * s4net['mAP50']:.1f} and mAP@0.7 {100 * s4net['mAP70']:.1f} "
            f"({100 * s4net['mAP50_occluded']:.1f} / {100 * s4net['mAP70_occluded']:.1f}") in text


def test_results_doc_bfloat16_rows_match_the_committed_bench_json() -> None:
    """The CPU bfloat16 inference rows quote the JSON their command wrote."""
    import json

    text = (REPO / "docs" / "RESULTS.md").read_text()
    runs = json.loads((REPO / "bench" / "results" / "speed_cpu_bf16.json").read_text())["runs"]
    seconds = {(run["model"], run["precision"]): run["median_s"] for run in runs}
    for model in ("s4net resnet50 [proposals: random-weight head]", "torchvision maskrcnn_resnet50_fpn"):
        fp32, bf16 = seconds[(model, "fp32")], seconds[(model, "bf16")]
        assert f"| {fp32:.3f} | {bf16:.3f} | {bf16 / fp32:.1f} |" in text, model
