"""``wsss evaluate``: a trained segmenter on a VOC-layout split, mIoU over the 21 classes.

One pass over the images scores the plain prediction (scale 1, no flip) and, when
scales or flip are asked, the test-time-augmented one (the scale-1 forward reused), and
with a CRF the CRF of each. Each is a labelled *variant* of the result
(:func:`variant_label`), so a single-scale score is never mistaken for a multi-scale +
flip one.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline.classes import NUM_CLASSES
from pipeline.cues.crf import CRFConfig, crf_inference
from pipeline.datasets.voc import VOCSegmentation, write_voc_label
from pipeline.segmenter.metrics import confusion_matrix, summarise
from pipeline.segmenter.model import load_segmenter, normalise_input

log = logging.getLogger(__name__)
STRIDE = 16  # DeepLab's output stride: inputs are padded to a multiple of it


@dataclass(frozen=True)
class TestTimeAugmentation:
    """Test scales (softmax averaged over them) and whether the horizontal flip of each joins the average."""

    __test__ = False  # not a pytest class, whatever its name

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    def __post_init__(self) -> None:
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"test scales must be > 0, got {list(self.scales)}")
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))

    @property
    def is_plain(self) -> bool:
        """Scale 1 alone, no flip: the prediction without augmentation."""
        return self.scales == (1.0,) and not self.flip


def variant_label(scales: Sequence[float], flip: bool, crf: bool) -> str:
    """A result's name that says how it was predicted, e.g. ``multi-scale (0.75, 1, 1.25) + flip + CRF``."""
    scales = [float(s) for s in scales]
    name = "single-scale" if scales == [1.0] else (
        f"{'multi-scale' if len(scales) > 1 else 'scale'} ({', '.join(f'{s:g}' for s in scales)})")
    return name + (" + flip" if flip else "") + (" + CRF" if crf else "")


def _scale_views(model: torch.nn.Module, image: torch.Tensor, scale: float, flip: bool) -> torch.Tensor:
    """Tensor[V, classes, H, W] softmax of the image at ``scale`` (V=2 with its flip), aligned and resized back.

    The resized image is flipped before padding, so both views are padded on their own
    right and bottom and cropped to the same pixels: aligned for any size. Views are normalised
    with the statistics of the model's encoder (:func:`~pipeline.segmenter.model.normalise_input`).
    """
    height, width = image.shape[-2:]
    h, w = max(STRIDE, round(height * scale)), max(STRIDE, round(width * scale))
    resized = F.interpolate(image, size=(h, w), mode="bilinear", align_corners=False) if (h, w) != (height, width) \
        else image
    views = torch.cat([resized, resized.flip(-1)]) if flip else resized
    batch = F.pad(normalise_input(model, views), (0, (-w) % STRIDE, 0, (-h) % STRIDE))  # zero: the mean, normalised
    probs = torch.softmax(model(batch)[..., :h, :w].float(), dim=1)
    if flip:
        probs = torch.stack([probs[0], probs[1].flip(-1)])
    if (h, w) != (height, width):
        probs = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)
    return probs


@torch.inference_mode()
def predict_variants(model: torch.nn.Module, image: np.ndarray, device: torch.device,
                     tta: TestTimeAugmentation) -> tuple[np.ndarray, np.ndarray | None]:
    """float32[classes, H, W] softmax of the plain prediction and of the augmented one (None when ``tta`` is plain).

    The augmented one averages every view equally (each scale, and its flip); the plain
    one is its scale-1, unflipped view when ``tta`` has scale 1.
    """
    tensor = torch.from_numpy(np.array(image, order="C")).to(device).permute(2, 0, 1)[None].float().div_(255.0)
    if tta.is_plain:
        return _scale_views(model, tensor, 1.0, False)[0].cpu().numpy(), None
    plain, total, views = None, None, 0
    for scale in tta.scales:
        probs = _scale_views(model, tensor, scale, tta.flip)
        if scale == 1.0:
            plain = probs[0]
        total = probs.sum(0) if total is None else total + probs.sum(0)
        views += probs.shape[0]
    if plain is None:
        plain = _scale_views(model, tensor, 1.0, False)[0]
    return plain.cpu().numpy(), (total / views).cpu().numpy()


def predict_probabilities(model: torch.nn.Module, image: np.ndarray, device: torch.device,
                          scales: Sequence[float] = (1.0,), flip: bool = False) -> np.ndarray:
    """float32[classes, H, W] softmax averaged over ``scales`` (and their horizontal flips, with ``flip``)."""
    plain, augmented = predict_variants(model, image, device, TestTimeAugmentation(tuple(scales), flip))
    return plain if augmented is None else augmented


def evaluate_model(
    model: torch.nn.Module,
    dataset: VOCSegmentation,
    device: torch.device | str = "cpu",
    tta: TestTimeAugmentation = TestTimeAugmentation(),
    crf: CRFConfig | None = None,
    predictions: str | os.PathLike | None = None,
    progress: bool = False,
) -> dict:
    """Scores of ``model`` (eval mode) on ``dataset``, one pass, every variant.

    Returns the primary variant's scores at the top level (the one with every option
    asked: ``tta`` and, with ``crf``, the CRF; the one whose label PNGs ``predictions``
    receives), its label as ``primary``, and ``variants``: label -> scores (mIoU,
    per-class IoU, ...) with the ``scales``, ``flip`` and ``crf`` it was predicted with.
    Variants: the plain prediction, the augmented one when ``tta`` is not plain, and the
    CRF of each when ``crf`` is given.
    """
    device = torch.device(device)
    variants: list[tuple[tuple[float, ...], bool, bool]] = [((1.0,), False, False)]
    if not tta.is_plain:
        variants.append((tta.scales, tta.flip, False))
    if crf is not None:
        variants += [(scales, flip, True) for scales, flip, _ in variants]
    settings = variants[-1]
    matrices = {variant: np.zeros((NUM_CLASSES, NUM_CLASSES + 1), dtype=np.int64) for variant in variants}
    for index in tqdm(range(len(dataset)), disable=not progress, desc=f"evaluate {dataset.split}", unit="img",
                      dynamic_ncols=True):
        sample = dataset[index]
        plain, augmented = predict_variants(model, sample.image, device, tta)
        for scales, flip, with_crf in variants:
            probs = plain if scales == (1.0,) and not flip else augmented
            if with_crf:
                probs = crf_inference(sample.image, probs, crf)
            prediction = np.argmax(probs, axis=0).astype(np.uint8)
            matrices[scales, flip, with_crf] += confusion_matrix(prediction, sample.label)
            if predictions is not None and (scales, flip, with_crf) == settings:
                write_voc_label(Path(predictions) / f"{sample.image_id}.png", prediction)
    scored = {}
    for scales, flip, with_crf in variants:
        scores = summarise(matrices[scales, flip, with_crf])
        scored[variant_label(scales, flip, with_crf)] = {"scales": list(scales), "flip": flip, "crf": with_crf,
                                                        **scores}
    primary = variant_label(*settings)
    summary = dict(scored[primary])
    summary.update(primary=primary, variants=scored, images=len(dataset), split=dataset.split,
                   confusion=matrices[settings].tolist())
    for label, scores in scored.items():
        log.info("%s: mIoU %.2f", label, 100 * scores["mIoU"])
    return summary


def evaluate_segmenter(
    checkpoint: str | os.PathLike,
    voc_root: str | os.PathLike,
    split: str = "val",
    device: str = "cpu",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    crf: CRFConfig | None = None,
    predictions: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Scores of a segmenter checkpoint on a VOC split, every variant (:func:`evaluate_model`)."""
    tta = TestTimeAugmentation(tuple(scales), flip)
    model, config = load_segmenter(checkpoint, map_location=device)
    summary = evaluate_model(model, VOCSegmentation(voc_root, split), device, tta, crf, predictions, progress)
    summary.update(checkpoint=str(checkpoint), arch=config.arch, encoder=config.encoder)
    return summary


def format_variants(summary: dict) -> str:
    """Per-class IoU, one column per variant headed by its label, then each variant's mIoU on its own line."""
    variants = summary.get("variants") or {summary.get("primary", "result"): summary}
    columns = [(label, scores, max(8, len(label))) for label, scores in variants.items()]

    def row(name: str, values: list[float | None]) -> str:
        cells = (f"  {'-' if v is None else f'{100 * v:.2f}':>{width}}" for v, (_, _, width) in
                 zip(values, columns, strict=True))
        return f"{name:<14}" + "".join(cells)

    lines = [f"{'class':<14}" + "".join(f"  {label:>{width}}" for label, _, width in columns)]
    for name in columns[0][1]["per_class_iou"]:
        lines.append(row(name, [scores["per_class_iou"][name] for _, scores, _ in columns]))
    lines.append(row("mIoU", [scores["mIoU"] for _, scores, _ in columns]))
    for label, scores, _ in columns:
        primary = "  (primary: the top level of the json)" if label == summary.get("primary") else ""
        labelled = (f" ({100 * scores['mIoU_labelled']:.2f} on the {100 * scores['coverage']:.1f}% labelled)"
                    if scores.get("coverage", 1.0) < 1.0 else "")
        lines.append(f"{label}: mIoU {100 * scores['mIoU']:.2f}{labelled}{primary}")
    return "\n".join(lines)
