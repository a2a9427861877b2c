"""Learning tests: each trainer, run briefly on the tiny synthetic world, beats a floor that a broken run does not.

Every other end-to-end test runs random weights, so a training loop that silently stopped
learning would pass them. Here S4Net, the DeepLab segmenter and the instance classifier are
trained through their real APIs and config dataclasses (device cpu, seeds explicit), and
scored on their own training data: the question is whether they learn at all, not how
well they generalise from a few dozen images. Each floor sits below the worst of the
measured runs, and each test also runs the same recipe with the learning rate at 1e-12
(the configs refuse 0) and asserts that run stays below the floor, so the floor tells a
learning run from a broken one.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python -m pytest -q -m slow tests/test_learning.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SMALL_S4NET, random_s4net_checkpoint

pytestmark = pytest.mark.slow

BROKEN_LR = 1e-12  # "learning rate 0": every config requires lr > 0

# How the values quoted above each floor were measured (one run per process, one at a time), e.g. S4Net seed 0:
#   PYTHONPATH=$PWD:tests OMP_NUM_THREADS=1 python -c '
#   import sys; from pathlib import Path; import test_learning as t
#   from pipeline.datasets.synthetic.world import generate_world
#   world, out = Path(sys.argv[1]), Path(sys.argv[2]); out.mkdir(parents=True)
#   if not world.exists(): generate_world(world, seed=0, scale="tiny", workers=1, progress=False)
#   print(t.s4net_train_map50(world, out, seed=0, lr=0.02, iterations=150))' /tmp/world /tmp/run


def s4net_train_map50(world: Path, out: Path, seed: int, lr: float, iterations: int) -> float:
    """mAP@0.5 (COCO protocol) on the training split of an S4Net trained ``iterations`` steps."""
    from s4net.checkpoint import load_checkpoint
    from s4net.config import S4NetConfig
    from s4net.evaluation import evaluate_predictions
    from s4net.inference import predict_annotated
    from s4net.train import TrainConfig, train

    salient = world / "salient"
    cfg = TrainConfig(
        annotations=salient / "train.json", images=salient / "images", out=out, iterations=iterations,
        batch_size=4, lr=lr, lr_steps=(), warmup_iterations=10, grad_clip=5.0, checkpoint_every=0,
        log_every=50, seed=seed, device="cpu", cpu_bf16=False, hflip=True,
        model=S4NetConfig(backbone="resnet18", **{**SMALL_S4NET, "image_size": 96}),
    )
    model = load_checkpoint(train(cfg, progress=False)).for_inference(min_score=0.0)
    document, results = predict_annotated(model, salient / "train.json", salient / "images", batch_size=4,
                                          device="cpu", progress=False)
    return evaluate_predictions(document, results)["mAP50"]


def segmenter_train_miou(world: Path, out: Path, seed: int, lr: float, iterations: int) -> float:
    """VOC mIoU on the VOC train split of a DeepLabv3+ (resnet18, from scratch) trained on its true masks."""
    from pipeline.segmenter.config import SegmenterConfig
    from pipeline.segmenter.evaluate import evaluate_segmenter
    from pipeline.segmenter.train import SegTrainConfig, train_segmenter

    voc = world / "voc" / "VOC2012"
    cfg = SegTrainConfig(
        images=voc / "JPEGImages", labels=voc / "SegmentationClass",
        ids=voc / "ImageSets" / "Segmentation" / "train.txt", out=out,
        model=SegmenterConfig(arch="deeplabv3plus", encoder="resnet18"), iterations=iterations,
        batch_size=4, lr=lr, crop=64, scale=(0.9, 1.1), checkpoint_every=0, log_every=50, seed=seed, device="cpu",
    )
    checkpoint = train_segmenter(cfg, progress=False)
    return evaluate_segmenter(checkpoint, voc, split="train", device="cpu", progress=False)["mIoU"]


def classifier_heldout_accuracy(world: Path, out: Path, seed: int, lr: float) -> tuple[float, float]:
    """(held-out accuracy, chance) of the instance classifier on a random small S4Net's instances."""
    from pipeline.cues.instance_classifier import ClassifierConfig, fit_instance_classifier
    from pipeline.cues.keyword_assignment import AssignmentConfig
    from pipeline.datasets.imagenet import ImageNetSubset
    from s4net.checkpoint import load_checkpoint

    model = load_checkpoint(random_s4net_checkpoint(out / "s4net.pt")).for_inference(min_score=0.0)
    imagenet = world / "imagenet"
    subset = ImageNetSubset(imagenet, imagenet / "keywords.csv")
    config = ClassifierConfig(hidden=0, epochs=200, lr=lr, holdout=0.3, seed=seed)
    _, report = fit_instance_classifier(model, subset, AssignmentConfig(score_threshold=0.0, min_area=0.01), config,
                                        out / "classifier.pt", device="cpu", progress=False)
    return report["heldout_accuracy"], 1.0 / len(report["classes_seen"])


# Measured (seed: value; 24 training images at 96 px, 150 iterations of batch 4, ~60-90 s each on 2 shared cores):
#   lr 0.02: seed 0 0.0840, seed 1 0.0405; lr 1e-12: seed 0 0.0055
# each a call of s4net_train_map50(world, out, SEED, LR, 150) on generate_world(world, seed=0, scale="tiny"):
# the command at the top of this module.
S4NET_MAP50_FLOOR = 0.025


@pytest.mark.parametrize("lr, learns", [(0.02, True), (BROKEN_LR, False)], ids=["lr0.02", "lr1e-12"])
def test_s4net_reaches_a_map50_floor(tiny_world: Path, tmp_path: Path, lr: float, learns: bool) -> None:
    map50 = s4net_train_map50(tiny_world, tmp_path, seed=0, lr=lr, iterations=150)
    assert (map50 >= S4NET_MAP50_FLOOR) == learns, (map50, S4NET_MAP50_FLOOR)


# Measured (16 VOC train images, 150 iterations of batch 4 at crop 64, ~45-55 s each on 2 shared cores):
#   lr 0.02: seed 0 0.501, seed 1 0.429; lr 1e-12: seed 0 0.0030 (at 60 iterations 0.0046)
# each a call of segmenter_train_miou(world, out, SEED, LR, 150) on the same world.
SEGMENTER_MIOU_FLOOR = 0.25


@pytest.mark.parametrize("lr, learns", [(0.02, True), (BROKEN_LR, False)], ids=["lr0.02", "lr1e-12"])
def test_segmenter_beats_an_miou_floor(tiny_world: Path, tmp_path: Path, lr: float, learns: bool) -> None:
    miou = segmenter_train_miou(tiny_world, tmp_path, seed=0, lr=lr, iterations=150)
    assert (miou >= SEGMENTER_MIOU_FLOOR) == learns, (miou, SEGMENTER_MIOU_FLOOR)


# Measured (566 instances of 29 single-keyword images, 30% held out, 20 classes so chance 0.05; ~8 s each):
#   lr 0.01: seed 0 1.000, seed 1 0.994; lr 1e-12: seed 0 0.071, seed 1 0.065
# each a call of classifier_heldout_accuracy(world, out, SEED, LR) on the same world. Held-out instances come from the
# training images (instances of one image overlap), so this shows learning, not generalisation.
CLASSIFIER_ACCURACY_FLOOR = 0.8


@pytest.mark.parametrize("lr, learns", [(0.01, True), (BROKEN_LR, False)], ids=["lr0.01", "lr1e-12"])
def test_instance_classifier_beats_chance(tiny_world: Path, tmp_path: Path, lr: float, learns: bool) -> None:
    accuracy, chance = classifier_heldout_accuracy(tiny_world, tmp_path, seed=0, lr=lr)
    assert chance == pytest.approx(1 / 20)
    assert (accuracy >= CLASSIFIER_ACCURACY_FLOOR) == learns, (accuracy, CLASSIFIER_ACCURACY_FLOOR)
