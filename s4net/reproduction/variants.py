"""The runs of the paper's ablations (Tables 1-3): which settings a study's variant trains with, and its folder name.

A study varies one setting of the paper's S4Net (ternary RoIMasking, alpha 1/3, the base
backbone): ``masking`` (Table 1), ``alpha`` (Table 2, written as a fraction, ``"1/3"``) or
``backbone`` (Table 3). A run's folder is named by all three settings
(``ternary-a1_3-resnet50``), so that the variants equal to the paper's S4Net share one run
across studies. The workflow plans with these functions; they import nothing heavy.
"""

from __future__ import annotations

import re

STUDIES = ("masking", "alpha", "backbone")
PAPER_S4NET = {"masking": "ternary", "alpha": "1/3"}  # with the base backbone of the experiments' config
PEER_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")  # what the Mask R-CNN peer can be built with
# a run's folder name, and its parts as patterns (the workflow's wildcards)
RUN_NAME = "{masking}-a{alpha}-{backbone}"
RUN_WILDCARDS = {"masking": "[a-z]+", "alpha": r"[0-9]+(?:_[0-9]+)?", "backbone": "[a-z0-9_]+"}


def alpha_value(text: str) -> float | None:
    """An alpha as written in a study (``"1/3"``) or in a run name (``"1_3"``) as a number; None if it is not one."""
    numerator, _, denominator = text.replace("_", "/").partition("/")
    try:
        return float(numerator) / float(denominator or 1)
    except (ValueError, ZeroDivisionError):
        return None


def variant_settings(study: str, variant: str, base_backbone: str) -> dict[str, str]:
    """The masking, alpha and backbone of one variant of ``study``: the paper's S4Net with that one setting changed.

    The ring width only matters to ternary masking (and expanded's default), so every other
    masking keeps alpha 1/3.
    """
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; expected one of {list(STUDIES)}")
    settings = {**PAPER_S4NET, "backbone": base_backbone, study: variant}
    if study != "alpha" and settings["masking"] != "ternary":
        settings["alpha"] = PAPER_S4NET["alpha"]
    return settings


def run_name(masking: str, alpha: str, backbone: str) -> str:
    """The folder name of a run: ``ternary-a1_3-resnet50`` (alpha with ``_`` for ``/``)."""
    written = re.sub(r"\W", "_", alpha)  # "1/3" -> "1_3"
    return RUN_NAME.format(masking=masking, alpha=written, backbone=backbone)


def variant_run(study: str, variant: str, base_backbone: str) -> str:
    """The folder name of the run that trains one variant of a study."""
    return run_name(**variant_settings(study, variant, base_backbone))


def run_flags(masking: str, alpha: str, backbone: str) -> str:
    """The ``s4net train`` flags of a run's settings (alpha as in its folder name, ``1_3``, or as ``1/3``)."""
    value = alpha_value(alpha)
    if value is None:
        raise ValueError(f"alpha {alpha!r} is not a number or a fraction such as 1/3")
    return f"--masking {masking} --alpha {value!r} --backbone {backbone}"


def study_peers(study: str, variants: list[str], base_backbone: str) -> dict[str, tuple[str, str]]:
    """``{peer row name: (its backbone, the S4Net variant it is compared with)}`` of a study.

    Table 1 gets Mask R-CNN with the base backbone beside ternary masking; Table 3 one per
    ResNet backbone; Table 2 none. A backbone the peer cannot be built with gets no peer.
    """
    if study == "masking" and "ternary" in variants and base_backbone in PEER_BACKBONES:
        return {"Mask R-CNN": (base_backbone, "ternary")}
    if study == "backbone":
        return {f"Mask R-CNN {b}": (b, b) for b in variants if b in PEER_BACKBONES}
    return {}
