"""README.md and docs/RESULTS.md: every command RESULTS.md names exists, and every measured number the two quote
matches the committed JSON it comes from (``bench/results/*.json``; the demo's report summary is
``bench/results/demo_summary.json``).

The expected text is formatted from the JSON, never written here: when a rerun replaces a JSON, a failing check
names the document, the sentence it expected and the JSON field, so the sentence to update is plain. Differences
between two demo mIoUs are taken between the values as shown (one decimal), so the text adds up for its reader.
Pure text and JSON: no model runs.
"""

from __future__ import annotations

import json
import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
README, DOC = "README.md", "docs/RESULTS.md"


@cache
def text(name: str) -> str:
    """The document with every run of whitespace made one space, so a quote may wrap across lines."""
    return " ".join((REPO / name).read_text().split())


@cache
def result(name: str) -> Any:
    return json.loads((RESULTS / name).read_text())


class Expect:
    """Collects the quotes a document lacks, so one run lists every sentence to update, then fails once."""

    def __init__(self) -> None:
        self.missing: list[str] = []

    def says(self, doc: str, expected: str, source: str) -> None:
        """``doc`` should say ``expected``, formatted from ``source`` (a committed JSON and its field)."""
        if expected not in text(doc):
            self.missing.append(f"{doc} should say {expected!r}, from {source}")

    def both(self, expected: str, source: str) -> None:
        for doc in (README, DOC):
            self.says(doc, expected, source)

    def done(self) -> None:
        assert not self.missing, ("update the sentences that quote these (or the JSON, if the text is right):\n"
                                  + "\n".join(self.missing))


def demo_iterations() -> int:
    """The demo's S4Net iterations (the config schema's default)."""
    import yaml

    schema = yaml.safe_load((REPO / "workflows" / "schemas" / "config.schema.yaml").read_text())
    return schema["properties"]["s4net"]["properties"]["iterations"]["default"]


def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def span(values: list[float], spec: str, sep: str = "-") -> str:
    """'low-high' of the values, each formatted with ``spec``."""
    return f"{min(values):{spec}}{sep}{max(values):{spec}}"


def commands() -> list[list[str]]:
    spans = re.findall(r"`([^`]+)`", (REPO / DOC).read_text())
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
            assert re.search(rf"^\s*rule {re.escape(target)}\b", rules, re.M), words  # `rule all` is indented
        else:
            assert re.search(rf"^{re.escape(words[1])}:", makefile, re.M), words


def test_docs_name_only_committed_result_files() -> None:
    """Every bench/results/*.json the docs name is committed; the removed ones are not quoted."""
    for doc in (README, DOC):
        named = set(re.findall(r"bench/results/([\w.-]+\.json)", text(doc)))
        assert named, doc
        for name in named:
            assert (RESULTS / name).is_file(), f"{doc} names bench/results/{name}, which is not committed"
        for gone in ("docs/results/", "compare_cues"):
            assert gone not in text(doc), f"{doc} still names {gone}"


def test_speed_numbers_match_speed_cpu_json() -> None:
    """S4Net against Mask R-CNN and the bare ResNet-50 at 320 px, float32 (bench/results/speed_cpu.json)."""
    e = Expect()
    data = result("speed_cpu.json")
    src = "bench/results/speed_cpu.json"
    runs = {run["model"]: run for run in data["runs"] if "table" not in run and "windows" not in run}
    bare, mask = runs["resnet50 (bare forward)"], runs["torchvision maskrcnn_resnet50_fpn"]
    s4net = [runs[f"s4net resnet50 [proposals: {p}]"] for p in ("random-weight head", "objects boxes", "salient boxes")]
    memory = "{peak_rss_mib:.0f} ({work_rss_mib:.0f})"
    e.says(DOC, f"| {bare['median_s']:.3f} | {1 / bare['median_s']:.1f} | 1.00 | | {memory.format(**bare)} |",
           f"{src}: the bare ResNet-50's median_s, peak_rss_mib, work_rss_mib")
    e.says(README, f"| {bare['median_s']:.3f} | 1.00 | |", f"{src}: the bare ResNet-50's median_s")
    for run in [*s4net, mask]:
        speedup = f"{run['speedup_vs_maskrcnn']:.1f}" if run is not mask else "1.0"
        cells = (f"| {run['median_s']:.3f} | {run['images_per_s']:.1f} | {run['time_vs_bare_resnet50']:.2f} "
                 f"| {speedup} |")
        e.says(DOC, cells, f"{src}: {run['model']}: median_s, images_per_s, time_vs_bare_resnet50, speedup_vs_maskrcnn")
        e.says(README, f"| {run['median_s']:.3f} | {run['time_vs_bare_resnet50']:.2f} | {speedup} |",
               f"{src}: {run['model']}: median_s, time_vs_bare_resnet50, speedup_vs_maskrcnn")
    for run in (s4net[0], mask):
        e.says(DOC, f"| {memory.format(**run)} |", f"{src}: {run['model']}: peak_rss_mib, work_rss_mib")
    speedups = [run["speedup_vs_maskrcnn"] for run in s4net]
    e.both(f"{span(speedups, '.1f')}x faster", f"{src}: speedup_vs_maskrcnn of the S4Net rows")
    e.says(README, f"({span([run['median_s'] for run in s4net], '.2f')} s against {mask['median_s']:.2f} s per image",
           f"{src}: median_s")
    targets = data["targets"]
    assert not any(run["meets_time_target"] or run["meets_speedup_target"] for run in s4net), "the docs say 'not met'"
    e.both(f"at most {targets['time_vs_bare_resnet50_at_most']:g}x the bare", f"{src}: targets")
    e.both(f"at least {targets['speedup_vs_maskrcnn_at_least']:g}x Mask R-CNN) are not met", f"{src}: targets")
    stages = s4net[0]["stages_median_s"]
    e.both(f"the backbone {stages['backbone']:.3f} s, the FPN {stages['fpn']:.3f} s, the detection head "
           f"{stages['head']:.3f} s", f"{src}: stages_median_s")
    e.both(f"the segmentation branch {stages['branch']:.3f} s", f"{src}: stages_median_s.branch")
    branch = {run["windows"]: run["median_s"] for run in data["runs"]
              if run["model"] == "s4net segmentation branch" and run["proposals"] == 20}
    e.says(README, f"takes {branch['exact windows (inference)']:.3f} s on exact windows against "
                   f"{branch['receptive-radius margin (training)']:.3f} s with the receptive-radius margin and "
                   f"{branch['whole map']:.3f} s on the whole map", f"{src}: the branch runs with 20 proposals")
    e.done()



def test_bfloat16_inference_numbers_match_speed_cpu_bf16_json() -> None:
    """bfloat16 against float32 inference on a CPU without native bfloat16 (bench/results/speed_cpu_bf16.json)."""
    e = Expect()
    data = result("speed_cpu_bf16.json")
    src = "bench/results/speed_cpu_bf16.json"
    runs = {(run["model"], run["precision"]): run for run in data["runs"]}
    models = [f"s4net resnet50 [proposals: {p}]" for p in ("random-weight head", "objects boxes", "salient boxes")]
    ratios = {}
    for model in [*models, "torchvision maskrcnn_resnet50_fpn"]:
        fp32, bf16 = runs[(model, "fp32")]["median_s"], runs[(model, "bf16")]["median_s"]
        ratios[model] = bf16 / fp32
        e.says(DOC, f"| {fp32:.3f} | {bf16:.3f} | {bf16 / fp32:.1f} |", f"{src}: {model}: median_s per precision")
    assert min(ratios.values()) > 1, "the docs say bfloat16 slows both models down on this CPU"
    e.says(DOC, f"S4Net {span([ratios[m] for m in models], '.1f')}x, Mask R-CNN "
                f"{ratios['torchvision maskrcnn_resnet50_fpn']:.1f}x", f"{src}: bf16 / fp32 median_s")
    speedups = [runs[(model, "fp32")]["speedup_vs_maskrcnn"] for model in models]
    e.says(DOC, f"In float32, S4Net is {span(speedups, '.1f')}x faster than Mask R-CNN",
           f"{src}: speedup_vs_maskrcnn of the fp32 rows")
    e.says(DOC, f"`cpu_bf16_supported: {str(data['cpu_bf16_supported']).lower()}`", f"{src}: cpu_bf16_supported")
    e.says(DOC, f"load average {data['load_average_at_start'][0]:.2f} at the start", f"{src}: load_average_at_start")
    e.done()



def test_training_step_numbers_match_train_step_json() -> None:
    """The training step of the demo recipe, S4Net and its Mask R-CNN peer (bench/results/train_step_cpu.json)."""
    e = Expect()
    data = result("train_step_cpu.json")
    src = "bench/results/train_step_cpu.json"
    runs = {run["precision"]: run for run in data["runs"]}
    s4, mask = (runs["fp32"], runs["bf16"]), (runs["maskrcnn fp32"], runs["maskrcnn bf16"])
    e.says(DOC, f"| {s4[0]['median_s']:.3f} | {s4[1]['median_s']:.3f} | {s4[1]['images_per_s']:.1f} | "
                f"{s4[0]['peak_rss_mib']:.0f} / {s4[1]['peak_rss_mib']:.0f} |", f"{src}: runs fp32, bf16")
    e.says(DOC, f"| {mask[0]['median_s']:.2f} | {mask[1]['median_s']:.2f} | {mask[1]['images_per_s']:.2f} | "
                f"{mask[0]['peak_rss_mib']:.0f} / {mask[1]['peak_rss_mib']:.0f} |",
           f"{src}: runs maskrcnn fp32, maskrcnn bf16")
    over = data["maskrcnn_step_over_s4net"]
    e.says(DOC, f"A Mask R-CNN step costs {over['fp32']:.0f}x S4Net's in float32 and {over['bf16']:.0f}x under "
                f"bfloat16; bfloat16 speeds S4Net up {data['bf16_speedup']:.2f}x", f"{src}: maskrcnn_step_over_s4net, "
                                                                                   "bf16_speedup")
    e.says(DOC, f"costs {over['bf16']:.0f} times S4Net's under bfloat16", f"{src}: maskrcnn_step_over_s4net.bf16")
    e.says(DOC, f"each step costs {over['bf16']:.0f} times S4Net's at the demo scale, under bfloat16",
           f"{src}: maskrcnn_step_over_s4net.bf16")
    e.says(README, f"costs 1/{over['fp32']:.0f} of Mask R-CNN's in float32, 1/{over['bf16']:.0f} under bfloat16",
           f"{src}: maskrcnn_step_over_s4net")
    e.says(README, f"{data['bf16_speedup']:.2f}x faster in `bench/results/train_step_cpu.json` "
                   f"(`python -m bench.train_step`: {s4[0]['median_s']:.3f} s against {s4[1]['median_s']:.3f} s)",
           f"{src}: bf16_speedup, median_s")
    starts = {f"{run['start_rss_mib']:.0f}" for run in data["runs"]}
    assert len(starts) == 1, f"{src}: start_rss_mib differ by run ({starts}); the docs quote one value"
    e.says(DOC, f"about {starts.pop()} MiB of it is the interpreter and imports", f"{src}: start_rss_mib")
    e.done()



def test_peer_numbers_match_peer_accuracy_json() -> None:
    """S4Net against its Mask R-CNN peer at the same short budget (bench/results/peer_accuracy_cpu.json)."""
    e = Expect()
    data = result("peer_accuracy_cpu.json")
    src = "bench/results/peer_accuracy_cpu.json"
    for run in data["runs"].values():
        cells = [pct(run[k]) for k in ("mAP50", "mAP70", "mAP50_occluded", "mAP70_occluded")]
        cells += [f"{run['images_per_s']:.1f}", f"{run['train_images_per_s_median']:.2f}"]
        e.says(DOC, "| " + " | ".join(cells) + " |",
               f"{src}: runs: mAPs, images_per_s, train_images_per_s_median")
    s4net, mask = data["runs"]["s4net"], data["runs"]["maskrcnn"]
    iterations = data["iterations"]
    e.says(DOC, f"{iterations} iterations, one seed", f"{src}: iterations")
    e.says(README, f"budget of {iterations} iterations Mask R-CNN is the more accurate", f"{src}: iterations")
    assert mask["mAP50"] > s4net["mAP50"], f"{src}: the docs say Mask R-CNN is the more accurate at this budget"
    e.says(DOC, f"It runs {data['inference_speedup']:.1f}x as many images/s in evaluation and trains "
                f"{data['training_speedup']:.0f}x as many images/s ({iterations} iterations took "
                f"{s4net['train_wall_s_this_call'] / 60:.1f} min against "
                f"{mask['train_wall_s_this_call'] / 60:.0f} min)",
           f"{src}: inference_speedup, training_speedup, train_wall_s_this_call")
    gap = {k: f"{-v:.1f}" for k, v in data["s4net_minus_maskrcnn_points"].items()}
    e.says(DOC, f"ahead by {gap['mAP50']} points of mAP@0.5 and {gap['mAP70']} of mAP@0.7 ({gap['mAP50_occluded']} "
                f"and {gap['mAP70_occluded']} on the occluded images)", f"{src}: s4net_minus_maskrcnn_points")
    hours = mask["train_wall_s_this_call"] * demo_iterations() / iterations / 3600
    e.says(DOC, f"its {iterations} iterations took {mask['train_wall_s_this_call'] / 60:.0f} min here, so the demo's "
                f"{demo_iterations()} would take about {hours:.0f} hours", f"{src}: maskrcnn.train_wall_s_this_call")
    e.says(DOC, f"about {hours:.0f} CPU-hours", f"{src}: maskrcnn.train_wall_s_this_call, scaled to the demo")
    summary = result("demo_summary.json")["s4net"]
    for key in ("mAP50", "mAP70", "mAP50_occluded", "mAP70_occluded"):
        assert summary[key] > mask[key], (f"bench/results/demo_summary.json s4net.{key} is not above {src}'s Mask "
                                          "R-CNN: RESULTS.md says the demo's S4Net is ahead at equal training time")
    e.done()



def test_proxy_label_numbers_match_proxy_labels_json() -> None:
    """Proxy-label throughput, memory, overheads and payload (bench/results/proxy_labels_cpu.json)."""
    e = Expect()
    data = result("proxy_labels_cpu.json")
    src = "bench/results/proxy_labels_cpu.json"
    rows = {"inference": "S4Net inference alone (branch from the cue's score threshold)",
            "inference_full_branch": "S4Net inference alone, full branch (all 20 proposals)",
            "proxy": "`wsss proxy-labels --workers 2`",
            "proxy_in_one_process": "`wsss proxy-labels`, one process (the CPU default)",
            "proxy_full_branch": "`wsss proxy-labels --workers 2 --min-score 0` (full branch)",
            "proxy+crf": "`wsss proxy-labels --workers 2 --crf`"}
    runs = {run["mode"]: run for run in data["runs"] if run["images"] == 1000 or run["mode"] != "proxy"}
    assert set(rows) <= set(runs), sorted(runs)
    for mode, label in rows.items():
        run = runs[mode]
        e.says(DOC, f"| {label} | {run['images_per_s']:.1f} | {run['peak_rss_mib']:.0f} |",
               f"{src}: mode {mode}: images_per_s, peak_rss_mib")
    images = runs["inference"]["images"]
    e.says(DOC, f"({images} images of the demo world", f"{src}: runs' images")
    e.says(README, f"on the same {images} images", f"{src}: runs' images")
    trained = re.search(r"trained here for (\d+) iterations", data["checkpoint_note"]).group(1)
    e.says(DOC, f"trained here for {trained} iterations", f"{src}: checkpoint_note")
    e.says(README, f"a {trained}-iteration demo S4Net", f"{src}: checkpoint_note")
    e.says(DOC, f"load average {data['load_average_at_end'][0]:.1f} at the end", f"{src}: load_average_at_end")
    one = data["proxy_in_one_process_overhead_vs_inference"]
    e.says(README, f"inference alone {runs['inference']['images_per_s']:.1f} images/s, `proxy-labels` in one process "
                   f"{runs['proxy_in_one_process']['images_per_s']:.1f} ({100 * one:.1f}% overhead; the CPU default), "
                   f"with `--workers 2` {runs['proxy']['images_per_s']:.1f}, with CRF "
                   f"{runs['proxy+crf']['images_per_s']:.1f}", f"{src}: images_per_s, "
                                                               "proxy_in_one_process_overhead_vs_inference")
    e.both(f"{data['min_score_speedup']:.2f}x as fast as the full branch", f"{src}: min_score_speedup")
    payload = data["mask_payload"]["min_score_threshold"]
    e.says(DOC, f"About {payload['instances_per_image']:.0f} of the 20 proposals per image pass",
           f"{src}: mask_payload.min_score_threshold.instances_per_image")
    e.says(DOC, f"{100 * one:.1f}% in one process", f"{src}: proxy_in_one_process_overhead_vs_inference")
    e.says(DOC, f"{100 * data['proxy_overhead_vs_inference']:.0f}% with a 2-process pool",
           f"{src}: proxy_overhead_vs_inference")
    e.says(DOC, f"are {100 * payload['packed_over_full']:.0f}% of the full masks' bytes",
           f"{src}: mask_payload.min_score_threshold.packed_over_full")
    e.says(DOC, f"flip {payload['float16_threshold_flips']} mask pixels across the cue's thresholds in "
                f"{payload['images']} images", f"{src}: mask_payload.min_score_threshold.float16_threshold_flips")
    e.done()



def test_load_numbers_match_proxy_labels_load_json() -> None:
    """5000 images in one proxy-labels run against 500 (bench/results/proxy_labels_load_cpu.json)."""
    e = Expect()
    data = result("proxy_labels_load_cpu.json")
    large, small = sorted(data["runs"], key=lambda run: -run["images"])
    e.both(f"{large['seconds']:.0f} s ({large['images_per_s']:.1f} images/s), peak RSS "
           f"{large['peak_rss_mib']:.0f} MiB, against {small['peak_rss_mib']:.0f} MiB for {small['images']} images",
           "bench/results/proxy_labels_load_cpu.json: runs' seconds, images_per_s, peak_rss_mib")
    e.says(DOC, f"{large['images']} images in", "bench/results/proxy_labels_load_cpu.json: runs' images")
    e.done()



def test_crf_numbers_match_crf_knobs_json() -> None:
    """The CRF's cost knobs (bench/results/crf_knobs_cpu.json): every row shown, and the sentences after it."""
    e = Expect()
    data = result("crf_knobs_cpu.json")
    src = "bench/results/crf_knobs_cpu.json"
    settings = {s["setting"]: s for s in data["settings"]}
    e.says(DOC, f"| none | 0 | {100 * data['no_crf']['mIoU']:.2f} | |", f"{src}: no_crf.mIoU")
    shown = re.findall(r"\| (scale [\d.]+, \d+ iterations)( \(default\))? \|([^|]*)\|([^|]*)\|([^|]*)\|", text(DOC))
    assert len(shown) >= 6, shown
    for setting, default, ms, miou, change in shown:
        s = settings[setting]
        assert bool(default) == (setting == data["default"]), (setting, data["default"])
        expected = (f"{s['cpu_ms_per_image']:.1f}", f"{100 * s['mIoU']:.2f}",
                    "" if default else f"{100 * s['mIoU_minus_default_crf']:.2f}")
        if (ms.strip(), miou.strip(), change.strip()) != expected:
            e.missing.append(f"{DOC}: the row {setting!r} should read {' | '.join(expected)}, from {src}")
    default, halved = settings[data["default"]], settings["scale 1, 5 iterations"]
    e.says(DOC, f"keeps the CRF's gain (+{100 * default['mIoU_minus_no_crf']:.1f} points) almost whole at "
                f"{100 * halved['cpu_time_over_default_crf']:.0f}% of its time",
           f"{src}: mIoU_minus_no_crf, cpu_time_over_default_crf")
    photos = data["real_photo_cpu_cost"]
    e.says(DOC, f"On {photos['images']} real ImageNet photos (about {photos['mean_pixels'] / 1e6:.1f} megapixels) the "
                f"default costs {photos[data['default']]['cpu_ms_per_image']:.0f} ms of CPU per image, 10 iterations "
                f"at scale 0.5 {photos['scale 0.5, 10 iterations']['cpu_ms_per_image']:.0f} ms",
           f"{src}: real_photo_cpu_cost")
    e.says(DOC, f"on {data['images']} demo images", f"{src}: images")
    e.done()



def test_segmenter_loader_numbers_match_segmenter_step_json() -> None:
    e = Expect()
    data = result("segmenter_step_cpu.json")
    src = "bench/results/segmenter_step_cpu.json"
    assert data["meets_target"]
    e.says(DOC, f"runs at {data['real_loop_images_per_s']:.1f} images/s", f"{src}: real_loop_images_per_s")
    e.says(DOC, f"runs at {data['model_step_images_per_s']['mean']:.1f} (mean of before and after). The ratio is "
                f"{data['real_over_model_step']:.2f}, so the target of at least {data['target_at_least']:g} is met",
           f"{src}: model_step_images_per_s.mean, real_over_model_step, target_at_least")
    memory = data["peak_rss_mib"]
    e.says(DOC, f"{memory['real_loop']['peak_rss_mib']:.0f} MiB for the real loop against "
                f"{memory['model_step']['peak_rss_mib']:.0f} MiB for the model step alone", f"{src}: peak_rss_mib")
    e.done()



def test_torchrun_numbers_match_ddp_scaling_json() -> None:
    e = Expect()
    data = result("ddp_scaling_cpu.json")
    src = "bench/results/ddp_scaling_cpu.json"
    for row in data["trainers"]:
        e.says(DOC, f"| {row['trainer']} | {row['one']['images_per_s']:.1f} | {row['many']['images_per_s']:.1f} | "
                    f"{row['speedup']:.2f} | {row['efficiency']:.2f} |", f"{src}: trainers ({row['trainer']})")
    e.says(DOC, f"global batch {data['global_batch']}, ResNet-18 at {data['size']} px", f"{src}: global_batch, size")
    e.says(DOC, f"the first {data['warmup_lines']} left out", f"{src}: warmup_lines")
    e.done()



def test_demo_numbers_match_demo_summary_json() -> None:
    """The demo's numbers in both docs quote its report's summary.json (bench/results/demo_summary.json)."""
    e = Expect()
    summary = result("demo_summary.json")
    src = "bench/results/demo_summary.json"
    seg, proxy, s4net = summary["segmenters"], summary["proxy_labels"], summary["s4net"]
    full = seg["ground_truth"]["mIoU"]
    for cue in ("saliency", "cam_saliency", "instances"):
        p, miou = proxy[cue], seg[cue]["mIoU"]
        e.says(DOC, f"| {pct(p['mIoU'])} ({pct(p['mIoU_labelled'])} on {pct(p['coverage'])}%) "
                    f"| {pct(miou)} | {miou / full:.3f} |",
               f"{src}: proxy_labels.{cue} mIoU, mIoU_labelled, coverage; segmenters.{cue}.mIoU over ground_truth's")
    e.says(DOC, f"| {pct(full)} | 1.000 |", f"{src}: segmenters.ground_truth.mIoU")
    e.both(f"mAP@0.5 {pct(s4net['mAP50'])} and mAP@0.7 {pct(s4net['mAP70'])} ({pct(s4net['mAP50_occluded'])} / "
           f"{pct(s4net['mAP70_occluded'])}", f"{src}: s4net")
    e.says(DOC, f"to {pct(s4net['mAP50'])} / {pct(s4net['mAP70'])} ({pct(s4net['mAP50_occluded'])} / "
                f"{pct(s4net['mAP70_occluded'])} occluded)", f"{src}: s4net")
    e.says(README, f"proxy-label mIoU {pct(proxy['instances']['mIoU'])} (instances), "
                   f"{pct(proxy['cam_saliency']['mIoU'])} (`cam_saliency`) and {pct(proxy['saliency']['mIoU'])} "
                   "(saliency)", f"{src}: proxy_labels.*.mIoU")
    e.says(README, f"VOC-val mIoU {pct(seg['instances']['mIoU'])} (instances), {pct(seg['cam_saliency']['mIoU'])} "
                   f"(`cam_saliency`), {pct(seg['saliency']['mIoU'])} (saliency) and {pct(full)} (ground truth)",
           f"{src}: segmenters.*.mIoU")

    def over(a: str, b: str) -> str:  # between the values as shown
        return f"{float(pct(seg[a]['mIoU'])) - float(pct(seg[b]['mIoU'])):.1f}"

    e.says(README, f"instances beat saliency by {over('instances', 'saliency')} points and reach "
                   f"{seg['instances']['mIoU'] / full:.3f} of the fully supervised", f"{src}: segmenters.*.mIoU")
    e.says(DOC, f"instances over saliency: {over('instances', 'saliency')} points", f"{src}: segmenters.*.mIoU")
    e.says(DOC, f"Att + Sal over saliency: {over('cam_saliency', 'saliency')} points", f"{src}: segmenters.*.mIoU")
    e.says(DOC, f"instances over Att + Sal: {over('instances', 'cam_saliency')} points", f"{src}: segmenters.*.mIoU")
    e.says(DOC, f"instances reach {seg['instances']['mIoU'] / full:.3f} of the fully supervised",
           f"{src}: segmenters.*.mIoU")
    order = [proxy[cue]["mIoU"] for cue in ("instances", "cam_saliency", "saliency")]
    assert order == sorted(order, reverse=True), f"{src}: RESULTS.md says the proxy labels keep the paper's order"
    e.says(DOC, f"(instances {pct(order[0])}, Att + Sal {pct(order[1])}, saliency {pct(order[2])})",
           f"{src}: proxy_labels.*.mIoU")
    e.says(DOC, f"VOC-like val split of {seg['instances']['images']} images", f"{src}: segmenters.*.images")
    e.says(DOC, f"the {proxy['instances']['images']} ImageNet-like images", f"{src}: proxy_labels.*.images")
    e.says(DOC, f"on the {s4net['images']} test images", f"{src}: s4net.images")

    seconds = {row["job"]: row["seconds"] for row in summary["runtimes"]}
    train_s4net = f"{seconds['train_s4net'] / 60:.1f} min"
    segmenters = [s for job, s in seconds.items() if job.startswith("train_segmenter_")]
    e.says(README, f"S4Net training {train_s4net}, the CAM classifier {seconds['train_cam'] / 60:.1f} min, each "
                   f"segmenter {span([s / 60 for s in segmenters], '.1f')} min", f"{src}: runtimes")
    e.says(DOC, f"({demo_iterations()} iterations) in {train_s4net}", f"{src}: runtimes train_s4net")
    e.says(README, f"the `demo_data` job (the `small` world) took {seconds['demo_data']:.0f} s", f"{src}: runtimes")
    shards = {cue: [s for job, s in seconds.items() if job.startswith(f"proxy_labels_{cue}.")] for cue in proxy}
    others = shards["instances"] + shards["saliency"]
    e.says(DOC, f"its two shards took {' and '.join(f'{s:.1f}' for s in shards['cam_saliency'])} s for "
                f"{proxy['cam_saliency']['images'] // len(shards['cam_saliency'])} images each, the other cues' "
                f"{span(others, '.1f', ' to ')} s", f"{src}: runtimes proxy_labels_*")

    if "code" in summary:  # runs since `wsss report --code`: the docs name the commit the numbers come from
        for doc in (README, DOC):
            e.says(doc, summary["code"]["git"], f"{src}: code.git")
    else:
        e.says(DOC, "the summary committed now predates the `code` field", f"{src}: no code field")
    e.done()



def voc_rows(rows: list[dict[str, Any]]) -> list[str]:
    """The RESULTS.md table rows of the VOC pseudo-label protocol, as wsss pseudo-label-table's rows give them."""
    from pipeline.reporting.pseudo_labels import labeller_title

    return [f"| {labeller_title(r['labeller'])} | {pct(r['mIoU_ignore_as_background'])} | {pct(r['mIoU'])} | "
            f"{pct(r['mIoU_labelled'])} on {pct(r['coverage'])}% | {pct(r['mean_precision'])} | "
            f"{pct(r['mean_recall'])} |" for r in rows]


def test_voc_pseudo_label_tables_match_their_json() -> None:
    """The VOC pseudo-label protocol: the demo world's table (demo_summary.json), the 16 real VOC images'
    (voc_protocol_seg16.json) and the published anchors (pipeline/reporting/pseudo_labels.py)."""
    from pipeline.reporting.pseudo_labels import ANCHORS

    e = Expect()
    demo = result("demo_summary.json")["voc_pseudo_labels"]
    for row in voc_rows(demo["rows"]):
        e.says(DOC, row, "bench/results/demo_summary.json: voc_pseudo_labels.rows")
    e.says(DOC, f"the {demo['rows'][0]['images']} images of the demo world's VOC {demo['split']} split",
           "bench/results/demo_summary.json: voc_pseudo_labels.rows[0].images")
    real = result("voc_protocol_seg16.json")
    for row in voc_rows(real["rows"]):
        e.says(DOC, row, "bench/results/voc_protocol_seg16.json: rows")
    e.says(DOC, real["run"]["models"]["checkpoint"]["sha256"][:12], "bench/results/voc_protocol_seg16.json: "
                                                                   "run.models.checkpoint.sha256")
    for anchor in ANCHORS:
        e.says(DOC, f"| {anchor.method} | {anchor.miou:.1f} |", "pipeline/reporting/pseudo_labels.py: ANCHORS")
    e.done()


def test_readme_wnid_map_counts_match_the_shipped_map() -> None:
    """The README's counts of the shipped wnid map (pipeline/datasets/wnid_to_voc.tsv)."""
    e = Expect()
    rows = [line.split("\t") for line in (REPO / "pipeline" / "datasets" / "wnid_to_voc.tsv").read_text().splitlines()
            if line.strip() and not line.startswith("#")][1:]
    per_class = {voc: sum(row[2] == voc for row in rows) for voc in ("dog", "bird")}
    e.says(README, f"names {len(rows)} ILSVRC-1000 synsets under the 20 VOC classes (all {per_class['dog']} dog "
                   f"breeds -> dog, {per_class['bird']} birds -> bird", "pipeline/datasets/wnid_to_voc.tsv")
    e.done()


def test_readme_imagenet_cam_numbers_match_imagenet_cam_choice_json() -> None:
    """The README's `--cam imagenet` bullet: how the ImageNet CAM's settings were chosen on the COCO dev set and what
    the default scores on the real VOC images and the ImageNet samples (bench/results/imagenet_cam_choice.json)."""
    e = Expect()
    data = result("imagenet_cam_choice.json")
    src = "bench/results/imagenet_cam_choice.json"
    default, dev, test = data["default"], data["dev"], data["test"]
    assert (default["pooling"], default["size"], default["output_stride"]) == ("max", 448, 16), (
        f"{src}: default; the README names max pooling, 448 px and stride 16 as the defaults")
    at = {(v["pooling"], v["size"], v["output_stride"]): pct(v["mIoU"]["0.25"]) for v in dev["variants"]}
    e.says(README, f"measured on {dev['images']} COCO images with VOC-class masks", f"{src}: dev.images")
    e.says(README, f"the `cam` labeller's mIoU at threshold 0.25 was {at[('max', 448, 16)]} with max pooling against "
                   f"{at[('top', 448, 16)]} (the top class's map), {at[('weighted', 448, 16)]} (softmax-weighted) and "
                   f"{at[('sum', 448, 16)]} (summed logits); {at[('max', 224, 16)]}, {at[('max', 320, 16)]} and "
                   f"{at[('max', 640, 16)]} at 224, 320 and 640 px; {at[('max', 448, 32)]} at stride 32",
           f"{src}: dev.variants[*].mIoU['0.25']")
    cam = {threshold: pct(scores["mIoU"]) for threshold, scores in test["cam"].items()}
    e.says(README, f"On the {test['images']} real VOC images of `../shared` (tags from the {test['tags']}",
           f"{src}: test.images, test.tags")
    e.says(README, f"`cam` {cam['0.25']} at threshold 0.25 and {cam['0.3']} at the default "
                   f"{default['cam_threshold']:g} ({cam['0.15']} / {cam['0.2']} / {cam['0.35']} / {cam['0.4']} at "
                   "0.15 / 0.2 / 0.35 / 0.4: reported, not tuned on)",
           f"{src}: test.cam[*].mIoU, default.cam_threshold")
    e.says(README, f"`cam_saliency` with oracle saliency maps {pct(test['cam_saliency_oracle']['mIoU'])} (`saliency` "
                   f"alone on the same maps {pct(test['saliency_oracle']['mIoU'])}: it leaves the "
                   f"{test['multi_keyword_images']} multi-keyword images ignore)",
           f"{src}: test.cam_saliency_oracle.mIoU, test.saliency_oracle.mIoU, test.multi_keyword_images")
    samples = data["imagenet_samples"]["poolings"][default["pooling"]]
    e.says(README, f"On the {samples['images']} ImageNet samples, the sample's VOC class has the highest pooled score "
                   f"{samples['hits']} times with max pooling", f"{src}: imagenet_samples.poolings.max")
    e.done()


def test_real_photo_numbers_match_realphoto_summary_json() -> None:
    """The real-photo run (workflows/configs/realphoto.yaml; its report's summary.json committed as
    bench/results/realphoto_summary.json): the VOC table by labeller, salient-object IoU, S4Net-Lite0's mAP, the
    training set's size and the run's job time, in RESULTS.md and the README."""
    e = Expect()
    src = "bench/results/realphoto_summary.json"
    data = result("realphoto_summary.json")

    def cell(value: float | None) -> str:
        return "" if value is None else pct(value)

    for row in data["voc_pseudo_labels"]["rows"]:
        e.says(DOC, f"| {row['title']} | {cell(row['mIoU_ignore_as_background'])} | {cell(row['mIoU'])} | "
                    f"{cell(row['coverage'])} | {cell(row['mean_precision'])} | {cell(row['mean_recall'])} |",
               f"{src}: voc_pseudo_labels.rows ({row['labeller']})")
    for name, row in data["salient_object_iou"].items():
        e.says(DOC, f"| {row['title']} | {cell(row['mean_iou'])} | {row['images']} |",
               f"{src}: salient_object_iou.{name}")
    lite0 = data["s4net"]["lite0"]
    e.says(DOC, f"mask mAP@0.5 {pct(lite0['mAP50'])} and mAP@0.7 {pct(lite0['mAP70'])} on the "
                f"{lite0['images']} held-out SOD photos", f"{src}: s4net.lite0")
    train = data["training_set"]["train"]
    e.both(f"{train['images']} photos with {train['instances']} salient instances", f"{src}: training_set.train")
    rows = {row["labeller"]: row for row in data["voc_pseudo_labels"]["rows"]}
    e.both(f"instances cue's pseudo-label mIoU {cell(rows['lite0/instances']['mIoU_ignore_as_background'])}",
           f"{src}: voc_pseudo_labels.rows (lite0/instances)")
    e.both(f"{data['runtimes']['total_job_seconds'] / 60:.1f} minutes of jobs", f"{src}: runtimes.total_job_seconds")
    e.done()


def test_ablation_tables_match_experiments_small_json() -> None:
    """Tables 1 and 2 at CPU scale (workflows/configs/experiments_small.yaml; `s4net ablation-table`'s JSON of each
    study committed as bench/results/experiments_small/{masking,alpha}.json): every row of the Markdown that JSON
    makes (ours beside the paper's, and the paired comparisons) and the ranking sentence are in RESULTS.md, every
    variant has its 3 seeds, and the plots and gradient maps the section shows are committed."""
    from s4net.reproduction.ablation import markdown

    e = Expect()
    for study in ("masking", "alpha"):
        src = f"bench/results/experiments_small/{study}.json"
        table = result(f"experiments_small/{study}.json")
        assert all(row["seeds"] == 3 for row in table["rows"]), f"{src}: a variant lacks a seed"
        for line in markdown(table).splitlines():
            if line.startswith("| ") and not line.startswith(("| variant |", "| comparison |")):
                e.says(DOC, line, f"{src}: a row")
            elif line.startswith("Ranking by mAP@0.5"):
                e.says(DOC, line, f"{src}: ranking_mAP50")
        assert (REPO / "docs" / f"ablation_{study}.png").is_file(), f"docs/ablation_{study}.png (from {study}.png)"
    assert len(list((REPO / "docs" / "fig6").glob("*_gradients.png"))) >= 2, "docs/fig6: the gradient maps"
    e.done()


def test_demo_seed_numbers_match_demo_seeds_json() -> None:
    """The demo over 3 seeds (tools/demo_seeds.py over each run's report summary; bench/results/demo_seeds.json):
    each number's mean ± std and per-seed values, the paired cue differences and the acceptance, in RESULTS.md."""
    e = Expect()
    src = "bench/results/demo_seeds.json"
    data = result("demo_seeds.json")
    assert len(data["seeds"]) == 3, f"{src}: three seeds"

    def stat(item: dict[str, Any]) -> str:
        seeds = ", ".join(pct(item["per_seed"][seed]) for seed in data["seeds"])
        return f"{pct(item['mean'])} ± {pct(item['std'])} ({seeds})"

    for key, title in (("mAP50", "mAP@0.5"), ("mAP70", "mAP@0.7"), ("mAP50_occluded", "mAP_O@0.5")):
        e.says(DOC, f"| S4Net test {title} | {stat(data['s4net'][key])} |", f"{src}: s4net.{key}")
    for source in ("instances", "saliency", "cam_saliency", "ground_truth"):
        e.says(DOC, f"| VOC-val mIoU, {source} | {stat(data['segmenters'][source])} |", f"{src}: segmenters.{source}")
    for cue in ("instances", "saliency", "cam_saliency"):
        e.says(DOC, f"| proxy-label mIoU, {cue} | {stat(data['proxy_labels'][cue])} |", f"{src}: proxy_labels.{cue}")
    for name, item in data["differences"].items():
        per_seed = ", ".join(f"{100 * d:+.1f}" for d in item["differences"])
        e.says(DOC, f"| {name} | {100 * item['mean']:+.1f} ± {100 * item['std']:.1f} | {per_seed} | "
                    f"{'yes' if item['larger_than_spread'] else 'no'} |", f"{src}: differences.{name}")
    e.says(DOC, f"demo acceptance over the {len(data['seeds'])} seeds: "
                f"{'met' if data['acceptance']['met'] else 'not met'}", f"{src}: acceptance.met")
    e.done()
