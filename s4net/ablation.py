"""Ablation tables: mean ± std over seeds of each variant's test metrics, beside the paper's numbers.

A study (masking, alpha, backbone) has variants; each variant was trained with several
seeds and scored by ``s4net evaluate``. :func:`study_table` reduces those metrics files to
one row per variant, and says whether the ranking of the variants by mAP@0.5 is the
paper's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


METRICS = ("mAP50", "mAP70", "mAP50_occluded", "mAP70_occluded", "images_per_s")
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


def variant_row(variant: str, runs: Sequence[dict[str, Any]], paper: dict[str, float | None] | None) -> VariantRow:
    """Mean and sample std (ddof 1; 0 for one seed) of every metric the runs report."""
    mean, std = {}, {}
    for key in METRICS:
        values = [float(run[key]) for run in runs if run.get(key) is not None]
        if values:
            mean[key] = float(np.mean(values))
            std[key] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return VariantRow(variant, len(runs), mean, std, dict(paper or {}))


def ranking(rows: Sequence[VariantRow], key: str, source: str) -> list[str]:
    """Variants best first by ``key`` of ``source`` ('ours' or 'paper'), those without a value left out."""
    values = {r.variant: (r.mean if source == "ours" else r.paper).get(key) for r in rows}
    return [v for v, _ in sorted(((v, x) for v, x in values.items() if x is not None), key=lambda item: -item[1])]


def study_table(study: str, runs: dict[str, list[dict[str, Any]]], paper: dict[str, dict[str, float | None]]) -> dict:
    """The study's rows and whether our mAP@0.5 ranking of the variants the paper scored matches the paper's."""
    rows = [variant_row(variant, metrics, paper.get(variant)) for variant, metrics in runs.items()]
    paper_order = ranking(rows, "mAP50", "paper")
    ours = [v for v in ranking(rows, "mAP50", "ours") if v in paper_order]
    return {
        "study": study,
        "rows": [row.__dict__ for row in rows],
        "ranking_mAP50": {"ours": ours, "paper": paper_order},
        "ranking_matches": ours == paper_order if len(paper_order) > 1 else None,
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
    return "\n".join(lines) + "\n\n" + verdict + "\n"
