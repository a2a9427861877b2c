"""Ablation tables: mean ± std over seeds of each variant's test metrics, beside the paper's numbers.

A study (masking, alpha, backbone) has variants; each variant was trained with several
seeds and scored by ``s4net evaluate``. :func:`study_table` reduces those metrics files to
one row per variant, and says whether the ranking of the variants by mAP@0.5 is the
paper's. Differences between variants are also compared seed by seed (the runs of one
seed share the world and the seed, so their difference is free of the seed-to-seed spread
the rows' std shows): :func:`paired_difference`. A study may also hold peer rows (another
method trained on the same data, e.g. torchvision Mask R-CNN): they are left out of the
ranking, and each is compared with the S4Net variant it stands beside, metric by metric.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from s4net.reproduction.variants import alpha_value

METRICS = ("mAP50", "mAP70", "mAP50_occluded", "mAP70_occluded", "images_per_s")
PAIRED_METRICS = ("mAP50", "mAP50_occluded")  # what the paired comparisons with the reference variant cover
HEADERS = {"mAP50": "mAP@0.5", "mAP70": "mAP@0.7", "mAP50_occluded": "mAP_O@0.5", "mAP70_occluded": "mAP_O@0.7",
           "images_per_s": "images/s"}


@dataclass
class VariantRow:
    """One variant of a study: mean and std of each metric over its seeds, and the paper's value where it has one."""

    variant: str
    seeds: int
    mean: dict[str, float]
    std: dict[str, float]
    paper: dict[str, float | None]


def variant_row(variant: str, runs: Sequence[dict[str, Any]], paper: dict[str, float | None] | None,
                metrics: Sequence[str] = METRICS) -> VariantRow:
    """Mean and sample std (ddof 1; 0 for one seed) of each of ``metrics`` the runs report, and the paper's."""
    mean, std = {}, {}
    for key in metrics:
        values = [float(run[key]) for run in runs if run.get(key) is not None]
        if values:
            mean[key] = float(np.mean(values))
            std[key] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return VariantRow(variant, len(runs), mean, std, {k: v for k, v in (paper or {}).items() if k in metrics})


def run_seed(run: dict[str, Any], index: int) -> str:
    """The seed a metrics file was trained with: the ``seed<N>`` folder of its checkpoint, else its position."""
    match = re.search(r"(?:^|[/\\])seed(\d+)(?:[/\\]|$)", str(run.get("checkpoint", "")))
    return match.group(1) if match else f"#{index}"


def paired_difference(variant: str, other: str, runs: dict[str, list[dict[str, Any]]], key: str) -> dict[str, Any]:
    """``variant`` minus ``other`` in ``key``, seed by seed over the seeds both have.

    ``mean`` and ``std`` (ddof 1) are over the per-seed differences; ``larger_than_spread`` holds when at
    least two seeds agree on the sign and the mean's size exceeds that std (with 3 seeds: a paired t above
    1.73); ``t``: the paired t statistic (None for one seed or no spread).
    """
    def by_seed(name: str) -> dict[str, float]:
        return {run_seed(run, i): float(run[key]) for i, run in enumerate(runs[name]) if run.get(key) is not None}

    return {"variant": variant, "other": other, "metric": key, **paired(by_seed(variant), by_seed(other))}


def paired(mine: dict[str, float], theirs: dict[str, float]) -> dict[str, Any]:
    """``mine`` minus ``theirs`` seed by seed (both: seed -> value) over the seeds both have: ``seeds``,
    ``differences``, their ``mean`` and ``std`` (ddof 1; None for one seed), the paired ``t`` and
    ``larger_than_spread`` (see :func:`paired_difference`)."""
    seeds = [seed for seed in mine if seed in theirs]
    differences = [mine[seed] - theirs[seed] for seed in seeds]
    mean = float(np.mean(differences)) if differences else None
    std = float(np.std(differences, ddof=1)) if len(differences) > 1 else None
    same_sign = len(differences) > 1 and (all(d > 0 for d in differences) or all(d < 0 for d in differences))
    t = mean / (std / np.sqrt(len(differences))) if std else None
    return {"seeds": seeds, "differences": differences, "mean": mean, "std": std, "t": None if t is None else float(t),
            "larger_than_spread": bool(same_sign and std is not None and abs(mean) > std)}


def ranking(rows: Sequence[VariantRow], key: str, source: str) -> list[str]:
    """Variants best first by ``key`` of ``source`` ('ours' or 'paper'), those without a value left out."""
    values = {r.variant: (r.mean if source == "ours" else r.paper).get(key) for r in rows}
    return [v for v, _ in sorted(((v, x) for v, x in values.items() if x is not None), key=lambda item: -item[1])]


def peer_comparison(rows: Sequence[VariantRow], peer: str, variant: str) -> dict[str, Any]:
    """Per metric both has: S4Net's ``variant`` and the ``peer`` row's mean, and whether S4Net's is better."""
    by_name = {row.variant: row for row in rows}
    if peer not in by_name or variant not in by_name:
        raise ValueError(f"peer comparison {peer}={variant}: both must be variants of the study")
    ours, theirs = by_name[variant].mean, by_name[peer].mean
    metrics = {key: {"s4net": ours[key], "peer": theirs[key], "s4net_better": ours[key] > theirs[key]}
               for key in METRICS if key in ours and key in theirs}
    return {"peer": peer, "variant": variant, "metrics": metrics}


def study_table(study: str, runs: dict[str, list[dict[str, Any]]], paper: dict[str, dict[str, float | None]],
                peers: dict[str, str] | None = None, metrics: Sequence[str] = METRICS) -> dict:
    """The study's rows (``metrics`` of each: mAP@0.5 always), whether our mAP@0.5 ranking of the variants the
    paper scored matches the paper's, and each peer (``peers``: peer variant -> the S4Net variant it is compared
    with) against its S4Net row."""
    peers = dict(peers or {})
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {list(METRICS)}")
    metrics = tuple(dict.fromkeys(["mAP50", *metrics]))  # the ranking and the comparisons need mAP@0.5
    rows = [variant_row(variant, scores, paper.get(variant), metrics) for variant, scores in runs.items()]
    paper_order = [v for v in ranking(rows, "mAP50", "paper") if v not in peers]
    ours = [v for v in ranking(rows, "mAP50", "ours") if v in paper_order]
    ranked = [v for v in ranking(rows, "mAP50", "ours") if v not in peers]
    reference = paper_order[0] if paper_order else None
    return {
        "study": study,
        "metrics": list(metrics),
        "rows": [row.__dict__ for row in rows],
        "ranking_mAP50": {"ours": ours, "paper": paper_order},
        "ranking_matches": ours == paper_order if len(paper_order) > 1 else None,
        # each variant against the next below it in our mAP@0.5 order, seed by seed
        "paired_adjacent": [paired_difference(a, b, runs, "mAP50") for a, b in zip(ranked, ranked[1:], strict=False)],
        # the paper's best variant against each other one, on all images and on the occluded ones
        "reference": reference,
        "paired_reference": [paired_difference(reference, v, runs, key) for v in ranked if v != reference
                             for key in PAIRED_METRICS if key in metrics] if reference else [],
        "peers": [peer_comparison(rows, peer, variant) for peer, variant in peers.items()],
    }


def markdown(table: dict) -> str:
    """The table as Markdown: ours as mean ± std (in %), the paper's beside it, and one sentence on the ranking."""
    keys = [k for k in METRICS if any(k in row["mean"] for row in table["rows"])]
    head = ["variant", "seeds"] + [f"{HEADERS[k]} ours" for k in keys] + [f"{HEADERS[k]} paper" for k in keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table["rows"]:
        scale = {k: 1.0 if k == "images_per_s" else 100.0 for k in keys}
        ours = [f"{scale[k] * row['mean'][k]:.1f} ± {scale[k] * row['std'][k]:.1f}" if k in row["mean"] else "-"
                for k in keys]
        paper = [f"{row['paper'][k]:.1f}" if row["paper"].get(k) is not None else "-" for k in keys]
        lines.append("| " + " | ".join([row["variant"], str(row["seeds"]), *ours, *paper]) + " |")
    ranks = table["ranking_mAP50"]
    if table["ranking_matches"] is None:
        verdict = "The paper scores fewer than two of these variants, so there is no ranking to compare."
    else:
        verdict = (f"Ranking by mAP@0.5: ours {' > '.join(ranks['ours'])}; paper {' > '.join(ranks['paper'])}: "
                   + ("the same order." if table["ranking_matches"] else "not the paper's order."))
    sentences = [verdict] + [_peer_sentence(comparison) for comparison in table.get("peers", [])]
    paired = table.get("paired_adjacent", []) + table.get("paired_reference", [])
    if paired:
        sentences.append(paired_markdown(paired))
    return "\n".join(lines) + "\n\n" + "\n\n".join(sentences) + "\n"


def paired_markdown(comparisons: Sequence[dict[str, Any]]) -> str:
    """The paired comparisons as a table: difference in points, mean ± std over seeds, each seed's, and whether
    it is larger than the spread."""
    lines = ["| comparison | metric | difference (points) | per seed | larger than the spread |",
             "|---|---|---|---|---|"]
    seen = set()
    for item in comparisons:
        name = (item["variant"], item["other"], item["metric"])
        if name in seen or item["mean"] is None:
            continue
        seen.add(name)
        spread = f" ± {100 * item['std']:.1f}" if item["std"] is not None else ""
        per_seed = ", ".join(f"{100 * d:+.1f}" for d in item["differences"])
        lines.append(f"| {item['variant']} - {item['other']} | {HEADERS[item['metric']]} | "
                     f"{100 * item['mean']:+.1f}{spread} | {per_seed} | "
                     f"{'yes' if item['larger_than_spread'] else 'no'} |")
    return ("Paired over seeds (each seed's runs share the world and the seed): a difference is larger than the "
            "spread when the seeds agree on its sign and its mean exceeds the standard deviation of the per-seed "
            "differences.\n\n" + "\n".join(lines))


def _peer_sentence(comparison: dict[str, Any]) -> str:
    """``S4Net (v) against P: wins on ..., loses on ...`` with both values."""
    def shown(key: str, value: float) -> str:
        return f"{value:.1f}" if key == "images_per_s" else f"{100 * value:.1f}"

    parts = {True: [], False: []}
    for key, item in comparison["metrics"].items():
        parts[item["s4net_better"]].append(f"{HEADERS[key]} ({shown(key, item['s4net'])} vs "
                                           f"{shown(key, item['peer'])})")
    wins = "wins on " + ", ".join(parts[True]) if parts[True] else "wins on nothing"
    losses = "loses on " + ", ".join(parts[False]) if parts[False] else "loses on nothing"
    return f"S4Net ({comparison['variant']}) against {comparison['peer']}: {wins}; {losses}."


def plot(table: dict, path) -> None:
    """The study as a PNG: alpha vs mAP (Table 2), images/s vs mAP@0.5 (Table 3), or mAP per variant (others).

    Ours as mean with ± std bars, the paper's values beside them where it has them.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from s4net.io.atomic import atomic_path

    rows = table["rows"]
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    if table["study"] == "alpha" and all(alpha_value(r["variant"]) is not None for r in rows):
        rows = sorted(rows, key=lambda r: alpha_value(r["variant"]))
        x = [alpha_value(r["variant"]) for r in rows]
        for key, colour in (("mAP50", "tab:blue"), ("mAP70", "tab:orange")):
            have = [(xi, r) for xi, r in zip(x, rows, strict=True) if key in r["mean"]]
            axes.errorbar([xi for xi, _ in have], [100 * r["mean"][key] for _, r in have],
                          yerr=[100 * r["std"][key] for _, r in have], marker="o", capsize=3, color=colour,
                          label=f"{HEADERS[key]} ours")
            paper = [(xi, r["paper"][key]) for xi, r in zip(x, rows, strict=True) if r["paper"].get(key) is not None]
            if paper:
                axes.plot(*zip(*paper, strict=True), linestyle="--", marker="s", color=colour, alpha=0.6,
                          label=f"{HEADERS[key]} paper")
        axes.set_xlabel("ternary ring width alpha")
        axes.set_ylabel("mask mAP (%)")
    elif table["study"] == "backbone":
        for row in rows:
            if "images_per_s" in row["mean"] and "mAP50" in row["mean"]:
                axes.errorbar(row["mean"]["images_per_s"], 100 * row["mean"]["mAP50"], yerr=100 * row["std"]["mAP50"],
                              xerr=row["std"]["images_per_s"], marker="o", capsize=3)
                axes.annotate(row["variant"], (row["mean"]["images_per_s"], 100 * row["mean"]["mAP50"]),
                              textcoords="offset points", xytext=(4, 4), fontsize=8)
        axes.set_xlabel("images/s (this machine, s4net evaluate)")
        axes.set_ylabel("mask mAP@0.5 (%)")
    else:
        keys = [k for k in ("mAP50", "mAP70", "mAP50_occluded", "mAP70_occluded") if any(k in r["mean"] for r in rows)]
        width = 0.8 / max(len(keys), 1)
        for slot, key in enumerate(keys):
            axes.bar([i + slot * width for i in range(len(rows))], [100 * r["mean"].get(key, 0.0) for r in rows], width,
                     yerr=[100 * r["std"].get(key, 0.0) for r in rows], capsize=2, label=HEADERS[key])
        axes.set_xticks([i + width * (len(keys) - 1) / 2 for i in range(len(rows))], [r["variant"] for r in rows],
                        rotation=20, fontsize=8)
        axes.set_ylabel("mask mAP (%)")
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8)
    axes.set_title(f"{table['study']} study: mean ± std over seeds")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    plt.close(figure)
