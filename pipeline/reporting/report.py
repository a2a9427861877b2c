"""The workflow's results for people: tables, the per-class IoU chart, sample overlays, runtimes.

``build_report`` reads the metrics the DAG wrote (S4Net mask mAP, VOC-val mIoU per label
source, proxy-label scores), the label folders and the per-rule benchmark files, and
writes small self-contained files that ``snakemake --report`` embeds, plus
``summary.json`` with every number shown.
"""

from __future__ import annotations

import csv
import html
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.classes import VOC_CLASSES
from pipeline.datasets.imagenet import read_keyword_table
from pipeline.datasets.voc import VOCSegmentation, label_overlay, read_voc_label
from s4net.io.atomic import atomic_write_bytes, atomic_write_text, read_json, write_json
from s4net.io.images import load_rgb

log = logging.getLogger(__name__)

SOURCE_TITLES = {"instances": "S4Net instances (ours)", "saliency": "saliency (Table-5 baseline)",
                 "cam_saliency": "CAM + saliency (Table 5's Att + Sal)", "cam": "CAM alone (background threshold)",
                 "ground_truth": "ground truth (fully supervised)"}
STYLE = ("body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
         "th,td{border:1px solid #bbb;padding:4px 10px;text-align:right}th{background:#eee}"
         "td:first-child,th:first-child{text-align:left}p{color:#444;max-width:50em}")


@dataclass
class ReportInputs:
    """What the report reads; every mapping is keyed by label source or cue name."""

    s4net_metrics: Path
    segmenter_metrics: dict[str, Path]
    out: Path
    proxy_scores: dict[str, Path] = field(default_factory=dict)
    proxy_labels: dict[str, Path] = field(default_factory=dict)
    imagenet: Path | None = None
    keywords: Path | None = None
    proxy_gt: Path | None = None
    predictions: dict[str, Path] = field(default_factory=dict)
    voc_root: Path | None = None
    split: str = "val"
    benchmarks: Path | None = None
    samples: int = 6
    seed: int = 0
    pseudo_label_table: Path | None = None  # wsss pseudo-label-table's json (the VOC pseudo-label protocol)
    code: Path | None = None  # wsss provenance's code.json: the commit the run's numbers come from


def html_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], note: str = "") -> str:
    """A small standalone HTML page with one table (cells escaped; floats as given)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    paragraph = f"<p>{html.escape(note)}</p>" if note else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h3>{html.escape(title)}</h3>"
            f"<table><tr>{head}</tr>{body}</table>{paragraph}</body></html>\n")


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{100 * value:.1f}"


def s4net_table(metrics: dict[str, Any]) -> str:
    """Mask mAP@0.5 and @0.7, all test images and the occluded subset (the paper's Table 2 columns)."""
    rows = [["all images", metrics.get("images", "?"), _pct(metrics["mAP50"]), _pct(metrics["mAP70"])],
            ["occluded subset", metrics.get("occluded_images", "?"), _pct(metrics.get("mAP50_occluded")),
             _pct(metrics.get("mAP70_occluded"))]]
    note = (f"{metrics.get('instances', '?')} salient instances; protocol {metrics.get('protocol', '?')}; "
            f"annotations {metrics.get('annotations', '?')}.")
    return html_table("S4Net salient-instance segmentation: mask mAP (%)", ["test set", "images", "mAP@0.5", "mAP@0.7"],
                      rows, note)


def segmenter_variants(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Label -> scores of each variant in a ``wsss evaluate`` json (one without ``variants``: its one result)."""
    if "variants" in metrics:
        return metrics["variants"]
    from pipeline.segmenter.evaluate import variant_label  # imports torch: only for jsons older than the variants

    label = variant_label(metrics.get("scales", [1.0]), bool(metrics.get("flip")), bool(metrics.get("crf")))
    return {label: metrics}


def primary_label(metrics: dict[str, Any]) -> str:
    """The label of the variant at the top level of a ``wsss evaluate`` json."""
    return metrics.get("primary") or next(iter(segmenter_variants(metrics)))


def miou_columns(segmenters: dict[str, dict[str, Any]]) -> list[str]:
    """Every variant label of the segmenters, in the order first met (plain first, as wsss evaluate writes them)."""
    labels: list[str] = []
    for metrics in segmenters.values():
        labels += [label for label in segmenter_variants(metrics) if label not in labels]
    return labels


def miou_rows(segmenters: dict[str, dict[str, Any]], proxies: dict[str, dict[str, Any]]) -> list[list[str]]:
    """One row per label source: VOC-val mIoU of each variant (:func:`miou_columns`), share of the fully supervised
    mIoU (primary variants), proxy-label mIoU."""
    reference = segmenters.get("ground_truth", {}).get("mIoU")
    columns = miou_columns(segmenters)
    rows = []
    for source, metrics in segmenters.items():
        variants = segmenter_variants(metrics)
        share = f"{metrics['mIoU'] / reference:.3f}" if reference else "n/a"
        proxy = proxies.get(source, {}).get("mIoU")
        rows.append([SOURCE_TITLES.get(source, source),
                     *[_pct(variants[label]["mIoU"]) if label in variants else "n/a" for label in columns],
                     share, _pct(proxy)])
    return rows


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed), imported when a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def per_class_chart(segmenters: dict[str, dict[str, Any]]) -> bytes:
    """PNG bytes: grouped bars of the per-class IoU of every label source (its primary variant, named in the legend)."""
    plt = _pyplot()
    classes = list(VOC_CLASSES)
    width = 0.8 / max(len(segmenters), 1)
    figure, axis = plt.subplots(figsize=(11.5, 5.0), dpi=100)
    for k, (source, metrics) in enumerate(segmenters.items()):
        values = [100 * (metrics["per_class_iou"].get(name) or 0.0) for name in classes]
        axis.bar(np.arange(len(classes)) + (k - (len(segmenters) - 1) / 2) * width, values, width,
                 label=f"{SOURCE_TITLES.get(source, source)}: mIoU {_pct(metrics['mIoU'])} "
                       f"({primary_label(metrics)})")
    axis.set_xticks(np.arange(len(classes)), classes, rotation=45, ha="right")
    axis.set_ylabel("IoU (%)")
    axis.set_ylim(0, 100)
    axis.set_yticks(range(0, 101, 20))
    axis.set_title("VOC val: IoU per class and label source")
    # below the axes, two sources a row: each label is long and one row of four does not fit the figure
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2, fontsize=8, frameon=False)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return _png(figure)


def _png(figure: Any) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def image_grid(rows: list[list[tuple[str, np.ndarray]]], title: str) -> bytes:
    """PNG bytes: a grid of captioned RGB images, one list per row."""
    plt = _pyplot()
    columns = max(len(row) for row in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(2.3 * columns, 2.3 * len(rows) + 0.4), dpi=100,
                                squeeze=False)
    for r, row in enumerate(rows):
        for c in range(columns):
            axis = axes[r][c]
            axis.axis("off")
            if c < len(row):
                caption, picture = row[c]
                axis.imshow(picture)
                axis.set_title(caption, fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return _png(figure)


def _choose(items: Sequence[str], count: int, seed: int) -> list[str]:
    chosen = np.random.default_rng(seed).choice(len(items), size=min(count, len(items)), replace=False)
    return [items[i] for i in sorted(chosen.tolist())]


def proxy_overlays(inputs: ReportInputs) -> bytes | None:
    """Sample ImageNet images with each cue's proxy labels (and their ground truth where known)."""
    if not inputs.proxy_labels or inputs.imagenet is None or inputs.keywords is None:
        return None
    entries = {e.image: e for e in read_keyword_table(inputs.keywords, inputs.imagenet)}
    stems = {str(Path(name).with_suffix("")): name for name in entries}
    common = sorted(set.intersection(*({str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.png")}
                                       for folder in inputs.proxy_labels.values())) & set(stems))
    if not common:
        return None
    rows = []
    for stem in _choose(common, inputs.samples, inputs.seed):
        entry = entries[stems[stem]]
        image = load_rgb(Path(inputs.imagenet) / entry.image)
        row = [(f"{Path(stem).name}\n{' + '.join(entry.keywords)}", image)]
        for cue, folder in inputs.proxy_labels.items():
            row.append((f"{cue} cue", label_overlay(image, read_voc_label(folder / f"{stem}.png"))))
        if inputs.proxy_gt is not None and (inputs.proxy_gt / f"{stem}.png").is_file():
            row.append(("ground truth", label_overlay(image, read_voc_label(inputs.proxy_gt / f"{stem}.png"))))
        rows.append(row)
    return image_grid(rows, "Proxy labels on sample ImageNet images (cream: ignore band)")


def prediction_overlays(inputs: ReportInputs) -> bytes | None:
    """Sample VOC val images: ground truth and every segmenter's prediction."""
    if not inputs.predictions or inputs.voc_root is None:
        return None
    dataset = VOCSegmentation(inputs.voc_root, inputs.split)
    ids = [i for i in dataset.ids if all((folder / f"{i}.png").is_file() for folder in inputs.predictions.values())]
    if not ids:
        return None
    index = {image_id: k for k, image_id in enumerate(dataset.ids)}
    rows = []
    for image_id in _choose(ids, inputs.samples, inputs.seed):
        sample = dataset[index[image_id]]
        row = [(image_id, sample.image), ("VOC ground truth", label_overlay(sample.image, sample.label))]
        for source, folder in inputs.predictions.items():
            title = "fully supervised" if source == "ground_truth" else f"{source} cue"
            row.append((f"prediction: {title}",
                        label_overlay(sample.image, read_voc_label(folder / f"{image_id}.png"))))
        rows.append(row)
    return image_grid(rows, f"Segmenter predictions on VOC {inputs.split}")


def read_benchmarks(folder: Path) -> list[dict[str, Any]]:
    """One row per Snakemake benchmark file (sub-folders too): job (its path less ``.tsv``), wall seconds, max RSS
    (MiB)."""
    rows = []
    for path in sorted(Path(folder).rglob("*.tsv")):
        with open(path, newline="") as handle:
            records = list(csv.DictReader(handle, delimiter="\t"))
        if not records:
            continue
        last = records[-1]
        rss = last.get("max_rss", "NA")
        rows.append({"job": path.relative_to(folder).with_suffix("").as_posix(), "seconds": float(last["s"]),
                     "max_rss_mib": float(rss) if rss not in ("NA", "", "-") else None})
    return rows


def runtime_chart(rows: list[dict[str, Any]]) -> bytes:
    """PNG bytes: horizontal bars of each job's wall time."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 0.3 * len(rows) + 1.2), dpi=100)
    axis.barh([r["job"] for r in rows][::-1], [r["seconds"] / 60 for r in rows][::-1], color="#4c72b0")
    axis.set_xlabel("wall time (min)")
    axis.set_title(f"Per-job runtimes (total {sum(r['seconds'] for r in rows) / 60:.1f} min of jobs)")
    axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return _png(figure)


def build_report(inputs: ReportInputs) -> dict[str, Any]:
    """Write the report files into ``inputs.out``; return the summary (also written as summary.json)."""
    s4net = read_json(inputs.s4net_metrics, "metrics json")
    segmenters = {source: read_json(path, "metrics json") for source, path in inputs.segmenter_metrics.items()}
    proxies = {cue: read_json(path, "metrics json") for cue, path in inputs.proxy_scores.items()}
    code = read_json(inputs.code, "provenance code.json") if inputs.code is not None else None
    table = (read_json(inputs.pseudo_label_table, "pseudo-label table json")
             if inputs.pseudo_label_table is not None else None)
    out = Path(inputs.out)  # made only once the inputs have loaded
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "s4net_map.html", s4net_table(s4net))
    primaries = sorted({primary_label(m) for m in segmenters.values()})
    note = ("mIoU over the whole split (one confusion matrix, 255 ignored), one column per way of predicting: "
            "single-scale is the plain prediction (scale 1, no flip); multi-scale averages the softmax over the "
            "scales listed, '+ flip' with each one's horizontal flip, '+ CRF' after a dense CRF. 'of full' is the "
            f"share of the fully supervised mIoU, of the {' / '.join(primaries)} column. Proxy-label mIoU scores "
            "the labels themselves against the ImageNet images' masks (known only for the synthetic world; n/a "
            "elsewhere).")
    atomic_write_text(out / "miou.html", html_table(
        f"Semantic segmentation on VOC {inputs.split}: mIoU (%) by label source",
        ["trained on", *(f"mIoU {label}" for label in miou_columns(segmenters)), "of full", "proxy-label mIoU"],
        miou_rows(segmenters, proxies), note))
    atomic_write_bytes(out / "per_class_iou.png", per_class_chart(segmenters))
    written = ["s4net_map.html", "miou.html", "per_class_iou.png"]
    for name, picture in (("proxy_overlays.png", proxy_overlays(inputs)),
                          ("prediction_overlays.png", prediction_overlays(inputs))):
        if picture is not None:
            atomic_write_bytes(out / name, picture)
            written.append(name)
    runtimes = read_benchmarks(inputs.benchmarks) if inputs.benchmarks is not None else []
    if runtimes:
        atomic_write_bytes(out / "runtimes.png", runtime_chart(runtimes))
        atomic_write_text(out / "runtimes.html", html_table(
            "Per-job runtimes (Snakemake benchmark files)", ["job", "wall time (s)", "max RSS (MiB)"],
            [[r["job"], f"{r['seconds']:.1f}", "n/a" if r["max_rss_mib"] is None else f"{r['max_rss_mib']:.0f}"]
             for r in runtimes],
            "A job run again after a kill shows its last attempt only (a training job resumed from its checkpoint: "
            "the resumed part)."))
        written += ["runtimes.png", "runtimes.html"]
    summary = {
        "s4net": {key: s4net.get(key) for key in ("mAP50", "mAP70", "mAP50_occluded", "mAP70_occluded", "images")},
        "segmenters": {source: {"mIoU": m["mIoU"], "per_class_iou": m["per_class_iou"], "images": m.get("images"),
                                "primary": primary_label(m),
                                "variants": {label: v["mIoU"] for label, v in segmenter_variants(m).items()}}
                       for source, m in segmenters.items()},
        "proxy_labels": {cue: {key: p.get(key) for key in ("mIoU", "mIoU_labelled", "coverage", "images")}
                         for cue, p in proxies.items()},
        "runtimes": runtimes,
        "files": written,
    }
    if code is not None:
        summary["code"] = code
    if table is not None:
        keys = ("labeller", "images", "mIoU", "mIoU_ignore_as_background", "mIoU_labelled", "coverage",
                "mean_precision", "mean_recall")
        summary["voc_pseudo_labels"] = {"split": table["split"],
                                        "rows": [{key: row.get(key) for key in keys} for row in table["rows"]]}
    write_json(out / "summary.json", summary, indent=2)
    log.info("report files in %s: %s", out, ", ".join(written))
    return summary

