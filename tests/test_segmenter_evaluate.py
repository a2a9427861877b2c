"""``wsss evaluate`` test-time augmentation and ``wsss score``, with a per-pixel model whose right answer is known.

The model is a 1x1 convolution: each pixel's logits are minus its squared distance (in the
ImageNet-normalised colour space the segmenter sees) to one colour per class, so a flat
block of a class's colour is that class, whatever the flip, scale or padding around it.
Image sizes are deliberately not multiples of the output stride (16).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.classes import IGNORE_INDEX
from pipeline.cli import main as wsss_main
from pipeline.cues.crf import CRFConfig
from pipeline.datasets.voc import VOCSegmentation, read_voc_label, write_voc_label
from pipeline.segmenter import evaluate
from pipeline.segmenter.evaluate import (
    STRIDE,
    TestTimeAugmentation,
    evaluate_model,
    predict_probabilities,
    predict_variants,
)
from pipeline.segmenter.metrics import confusion_matrix
from pipeline.segmenter.model import SegmenterConfig
from s4net.models.backbones import IMAGENET_MEAN, IMAGENET_STD

# class index -> RGB of its blocks; every other class is never predicted
COLOURS = {0: (20, 20, 20), 1: (230, 30, 30), 2: (30, 200, 40), 15: (40, 60, 220)}


class NearestColour(nn.Module):
    """Logits[N, 21, H, W] = -sharpness * |x - colour_k|^2 (up to a per-pixel constant) on the normalised image.

    Refuses inputs whose sides are not multiples of :data:`STRIDE`, as DeepLab's
    stride-16 features would misalign them.
    """

    def __init__(self, sharpness: float = 4.0, classes: int = 21) -> None:
        super().__init__()
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self.conv = nn.Conv2d(3, classes, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.fill_(-1e4)
            for index, rgb in COLOURS.items():
                centre = (torch.tensor(rgb, dtype=torch.float32) / 255.0 - mean) / std
                self.conv.weight[index, :, 0, 0] = 2 * sharpness * centre
                self.conv.bias[index] = -sharpness * centre.square().sum()

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[-2] % STRIDE or batch.shape[-1] % STRIDE:
            raise ValueError(f"input {tuple(batch.shape[-2:])} is not padded to a multiple of {STRIDE}")
        return self.conv(batch)


def blocks(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8[H, W, 3] image and uint8[H, W] label: four flat, left-right asymmetric blocks."""
    label = np.zeros((height, width), dtype=np.uint8)
    label[:, : width // 5] = 1
    label[: height // 2, width // 5: (3 * width) // 5] = 2
    label[height // 2:, (4 * width) // 5:] = 15
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index, rgb in COLOURS.items():
        palette[index] = rgb
    return palette[label], label


@pytest.mark.parametrize("height, width", [(37, 53), (20, 500), (45, 77), (33, 100)])
def test_flip_is_aligned_for_every_size(height: int, width: int) -> None:
    image, label = blocks(height, width)
    model = NearestColour().eval()
    plain = predict_probabilities(model, image, torch.device("cpu"))
    flipped = predict_probabilities(model, image, torch.device("cpu"), flip=True)
    assert (plain.argmax(0) == label).all()  # the model is right on every pixel
    # a per-pixel model does not care about flips: averaging with the flipped view changes nothing
    worst = np.abs(flipped - plain).max(axis=0)
    assert worst.max() <= 1e-5, (
        f"{width}x{height} (padding {(-width) % STRIDE} columns): flip moves probabilities by up to "
        f"{worst.max():.3f}, in columns {np.flatnonzero(worst.max(axis=0) > 1e-5).tolist()}")
    assert (flipped.argmax(0) == label).all()


def near_boundary(label: np.ndarray, radius: int) -> np.ndarray:
    """bool[H, W]: pixels within ``radius`` (Chebyshev) of a pixel of another label."""
    height, width = label.shape
    padded = np.pad(label, radius, mode="edge")
    near = np.zeros(label.shape, dtype=bool)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            near |= padded[dy: dy + height, dx: dx + width] != label
    return near


@pytest.mark.parametrize("height, width", [(45, 77), (37, 130)])
@pytest.mark.parametrize("flip", [False, True])
def test_scales_are_aligned_and_agree_on_flat_regions(height: int, width: int, flip: bool) -> None:
    image, label = blocks(height, width)
    model = NearestColour().eval()
    plain = predict_probabilities(model, image, torch.device("cpu"))
    tta = TestTimeAugmentation((0.75, 1.25), flip)
    same_plain, augmented = predict_variants(model, image, torch.device("cpu"), tta)
    assert augmented is not None and np.allclose(same_plain, plain, atol=1e-6)  # scale 1 computed when not asked
    # resizing mixes colours only within a few pixels of a block edge: everywhere else every scale and flip
    # sees the same flat colour, and a view shifted by padding or rounding would not
    flat = ~near_boundary(label, 3)
    assert flat.mean() > 0.6
    worst = np.abs(augmented - plain).max(axis=0)
    assert worst[flat].max() <= 1e-4, f"scales move flat-region probabilities by {worst[flat].max():.3f}"
    wrong = augmented.argmax(0) != label
    assert not wrong[flat].any() and wrong.sum() <= near_boundary(label, 1).sum()


class NoisyColour(NearestColour):
    """:class:`NearestColour`, unsure, plus fixed Gaussian noise on the logits: some pixels wrong, scattered."""

    def __init__(self, noise: float = 1.0) -> None:
        super().__init__(sharpness=0.1)
        self.noise = noise

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        logits = super().forward(batch)
        generator = torch.Generator().manual_seed(0)
        return logits + self.noise * torch.randn(logits.shape, generator=generator)


def write_voc(root: Path, samples: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """A VOC2012-layout folder (PNG images, lossless) whose val split holds ``samples``: id -> (image, label)."""
    from PIL import Image

    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for image_id, (image, label) in samples.items():
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.png")
        write_voc_label(root / "SegmentationClass" / f"{image_id}.png", label)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(f"{i}\n" for i in samples))
    return root


def test_crf_keeps_a_perfect_prediction_and_cleans_a_noisy_one(tmp_path: Path) -> None:
    voc = VOCSegmentation(write_voc(tmp_path / "VOC2012", {"a": blocks(45, 77), "b": blocks(37, 53)}), "val")
    perfect = evaluate_model(NearestColour().eval(), voc, crf=CRFConfig())
    assert perfect["primary"] == "single-scale + CRF" and set(perfect["variants"]) == {"single-scale",
                                                                                       "single-scale + CRF"}
    assert perfect["variants"]["single-scale"]["mIoU"] == 1.0 and perfect["mIoU"] == 1.0
    noisy = evaluate_model(NoisyColour().eval(), voc, crf=CRFConfig())
    assert noisy["variants"]["single-scale"]["mIoU"] < 0.8  # about a third of the pixels wrong
    assert noisy["variants"]["single-scale + CRF"]["mIoU"] == 1.0 == noisy["mIoU"]
    assert noisy["variants"]["single-scale + CRF"]["crf"] and not noisy["variants"]["single-scale"]["crf"]


def test_cli_writes_every_variant_labelled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    samples = {"a": blocks(45, 77), "b": blocks(37, 53)}
    root = write_voc(tmp_path / "VOC2012", samples)
    monkeypatch.setattr(evaluate, "load_segmenter", lambda path, map_location: (NearestColour().eval(),
                                                                                SegmenterConfig()))
    out = tmp_path / "val_metrics.json"
    code = wsss_main(["evaluate", "--checkpoint", str(tmp_path / "model_final.pt"), "--voc-root", str(root),
                      "--out", str(out), "--scales", "0.75", "1", "1.25", "--flip", "--crf", "--device", "cpu",
                      "--save-predictions", str(tmp_path / "pred"), "-q"])
    assert code == 0
    metrics = json.loads(out.read_text())
    augmented = "multi-scale (0.75, 1, 1.25) + flip"
    assert list(metrics["variants"]) == ["single-scale", augmented, "single-scale + CRF", f"{augmented} + CRF"]
    assert metrics["primary"] == f"{augmented} + CRF"
    assert (metrics["variants"][augmented]["scales"], metrics["variants"][augmented]["flip"],
            metrics["variants"][augmented]["crf"]) == ([0.75, 1.0, 1.25], True, False)
    assert metrics["variants"]["single-scale"]["mIoU"] == 1.0
    assert set(metrics["variants"]["single-scale"]["per_class_iou"].values()) == {1.0, None}
    boundary = sum(near_boundary(label, 1).sum() for _, label in samples.values())
    pixels = sum(label.size for _, label in samples.values())
    assert 1 - boundary / pixels < metrics["variants"][augmented]["pixel_accuracy"] <= 1.0
    # the top level is the primary variant, as before the variants existed
    for key in ("mIoU", "per_class_iou", "scales", "flip", "crf"):
        assert metrics[key] == metrics["variants"][metrics["primary"]][key]
    assert (metrics["images"], metrics["split"]) == (2, "val")
    predicted = {p.stem: read_voc_label(p) for p in (tmp_path / "pred").glob("*.png")}
    assert set(predicted) == {"a", "b"}
    primary = np.zeros((21, 22), dtype=np.int64)
    for image_id, (_, label) in samples.items():
        primary += confusion_matrix(predicted[image_id], label)
    assert primary.tolist() == metrics["confusion"]  # the saved PNGs are the primary variant's
    printed = capsys.readouterr().out
    for label in metrics["variants"]:
        assert label in printed
    assert "single-scale: mIoU 100.00" in printed


def test_score_prints_and_writes_the_known_confusion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt = np.zeros((4, 6), dtype=np.uint8)
    gt[:, 3:] = 1
    gt[0, 0] = IGNORE_INDEX
    pred = gt.copy()
    pred[0, 0] = 1  # ignored in the ground truth: not counted
    pred[1, 2] = 1  # background taken for aeroplane
    pred[2, 3] = IGNORE_INDEX  # aeroplane left unlabelled: a miss that counts for no class
    write_voc_label(tmp_path / "gt" / "x.png", gt)
    write_voc_label(tmp_path / "pred" / "x.png", pred)
    write_voc_label(tmp_path / "pred" / "extra.png", pred)  # no ground truth: counted, not scored
    code = wsss_main(["score", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                      "--out", str(tmp_path / "score.json")])
    assert code == 0
    scores = json.loads((tmp_path / "score.json").read_text())
    # background: 10 right of 11, plus 0 false positives -> 10/11; aeroplane: 11 of 12, plus 1 -> 11/13
    assert scores["per_class_iou"]["background"] == pytest.approx(10 / 11)
    assert scores["per_class_iou"]["aeroplane"] == pytest.approx(11 / 13)
    assert [v for k, v in scores["per_class_iou"].items() if k not in ("background", "aeroplane")] == [None] * 19
    assert scores["mIoU"] == pytest.approx((10 / 11 + 11 / 13) / 2)
    assert scores["mIoU_labelled"] == pytest.approx((10 / 11 + 11 / 12) / 2)
    assert scores["coverage"] == pytest.approx(22 / 23) and scores["pixels"] == 23
    assert (scores["images"], scores["predictions_without_ground_truth"]) == (1, 1)
    assert scores["confusion"][0][:2] == [10, 1] and scores["confusion"][1][:2] == [0, 11]
    assert scores["confusion"][1][21] == 1
    printed = capsys.readouterr().out
    assert "background       90.91" in printed and "aeroplane        84.62" in printed
    assert "mIoU             87.76" in printed and "(labelled)       91.29  on 95.7% of the pixels" in printed


def test_report_labels_each_variant(tmp_path: Path) -> None:
    from pipeline.classes import VOC_CLASSES
    from pipeline.reporting.report import miou_columns, miou_rows, segmenter_variants

    def scores(miou: float, **settings: object) -> dict:
        return {"mIoU": miou, "per_class_iou": dict.fromkeys(VOC_CLASSES, miou), **settings}

    plain, augmented = "single-scale", "multi-scale (0.75, 1, 1.25) + flip"
    new = {**scores(0.6), "primary": augmented,
           "variants": {plain: scores(0.5, scales=[1.0], flip=False), augmented: scores(0.6, scales=[0.75, 1, 1.25],
                                                                                         flip=True)}}
    old = scores(0.7, scales=[1.0], flip=True, crf=False)  # written before the variants: its one result, labelled
    assert list(segmenter_variants(old)) == ["single-scale + flip"]
    segmenters = {"instances": new, "ground_truth": old}
    assert miou_columns(segmenters) == [plain, augmented, "single-scale + flip"]
    assert miou_rows(segmenters, {}) == [["S4Net instances (ours)", "50.0", "60.0", "n/a", "0.857", "n/a"],
                                         ["ground truth (fully supervised)", "n/a", "n/a", "70.0", "1.000", "n/a"]]
