"""The segmenter: label/image pairing, seeded augmentation, resumable training, evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.classes import IGNORE_INDEX
from pipeline.cli import main as wsss_main
from pipeline.segmenter.data import Augment, SeededSegBatches, augment, find_pairs
from pipeline.segmenter.model import SegmenterConfig, build_segmenter
from pipeline.segmenter.train import SegTrainConfig
from s4net.engine import poly_factor
from s4net.errors import DatasetError, InputError

TINY = SegmenterConfig(arch="deeplabv3plus", encoder="resnet18")


def test_pairs_follow_the_label_paths(tiny_world: Path, tmp_path: Path) -> None:
    imagenet = tiny_world / "imagenet"
    pairs = find_pairs(imagenet, imagenet / "masks")
    assert len(pairs) == 40 and all(p.image.suffix == ".JPEG" and p.image.is_file() for p in pairs)
    voc = tiny_world / "voc" / "VOC2012"
    listed = find_pairs(voc / "JPEGImages", voc / "SegmentationClass", voc / "ImageSets" / "Segmentation" / "train.txt")
    assert len(listed) == 16
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "lonely.png").write_bytes((voc / "SegmentationClass").glob("*.png").__next__().read_bytes())
    with pytest.raises(DatasetError, match="has no image"):
        find_pairs(voc / "JPEGImages", tmp_path / "labels")


def test_batches_are_a_pure_function_of_seed_and_iteration() -> None:
    whole = list(SeededSegBatches(7, 3, seed=5, start=0, iterations=6))
    resumed = list(SeededSegBatches(7, 3, seed=5, start=4, iterations=6))
    assert whole[4:] == resumed
    first_epoch = [index for batch in whole for index, _ in batch][:7]
    assert sorted(first_epoch) == list(range(7))  # every image once per epoch
    assert whole != list(SeededSegBatches(7, 3, seed=6, start=0, iterations=6))


def reference_batches(count: int, batch_size: int, seed: int, start: int, iterations: int,
                      scale: tuple[float, float] = (0.5, 1.5), hflip: bool = True) -> list[list[tuple[int, Augment]]]:
    """The batches as release 0.1.0 drew them (a permutation drawn per sample): runs and resumes must keep them."""
    batches = []
    for iteration in range(start, iterations):
        batch = []
        for slot in range(batch_size):
            epoch, offset = divmod(iteration * batch_size + slot, count)
            index = int(np.random.default_rng([seed, 1, epoch]).permutation(count)[offset])
            rng = np.random.default_rng([seed, 2, iteration, slot])
            batch.append((index, Augment(float(rng.uniform(*scale)), float(rng.random()), float(rng.random()),
                                         bool(hflip and rng.random() < 0.5))))
        batches.append(batch)
    return batches


@pytest.mark.parametrize("count, batch_size, seed, start, iterations, hflip", [
    (7, 3, 5, 0, 9, True), (7, 3, 5, 4, 9, True), (3, 7, 0, 0, 4, True), (10, 10, 2, 1, 4, False),
    (1, 2, 9, 0, 3, True)])
def test_batches_are_the_ones_runs_and_resumes_always_drew(count: int, batch_size: int, seed: int, start: int,
                                                           iterations: int, hflip: bool) -> None:
    drawn = list(SeededSegBatches(count, batch_size, seed, start, iterations, (0.6, 1.4), hflip))
    assert drawn == reference_batches(count, batch_size, seed, start, iterations, (0.6, 1.4), hflip)


def test_each_epoch_permutation_is_drawn_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.segmenter import data

    drawn = []
    real = np.random.default_rng

    def counting(seed=None):
        if isinstance(seed, list) and seed[1] == 1:  # [seed, 1, epoch]: an epoch's permutation
            drawn.append(seed[2])
        return real(seed)

    monkeypatch.setattr(data.np.random, "default_rng", counting)
    batches = list(SeededSegBatches(5, 4, seed=1, start=0, iterations=6))  # 24 samples: epochs 0 .. 4
    assert len(batches) == 6 and drawn == [0, 1, 2, 3, 4]


def test_workers_ship_uint8_and_the_device_gets_the_same_numbers(tiny_world: Path) -> None:
    from pipeline.segmenter.data import SegmentationPairs

    imagenet = tiny_world / "imagenet"
    dataset = SegmentationPairs(find_pairs(imagenet, imagenet / "masks")[:2], crop=40)
    items = [dataset[(index, Augment(scale, 0.3, 0.7, flip))]
             for index, scale, flip in ((0, 0.5, True), (1, 1.2, False))]  # padded with ignore, and cropped
    assert [(image.dtype, label.dtype) for image, label in items] == [(torch.uint8, torch.uint8)] * 2
    from pipeline.segmenter.train import batch_on_device

    images, labels = batch_on_device(torch.utils.data.default_collate(items), torch.device("cpu"))
    # what the workers computed and shipped before: float32 in [0, 1] and int64
    for position, (index, scale, flip) in enumerate(((0, 0.5, True), (1, 1.2, False))):
        image, label = augment(*dataset.read(index), Augment(scale, 0.3, 0.7, flip), 40)
        assert torch.equal(images[position], torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0))
        assert torch.equal(labels[position], torch.from_numpy(label).long())
    assert images.dtype == torch.float32 and labels.dtype == torch.int64 and (labels == IGNORE_INDEX).any()


def test_augment_pads_with_ignore_and_flips_consistently() -> None:
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    label = np.zeros((20, 30), dtype=np.uint8)
    image[:, :10] = 255
    label[:, :10] = 7
    out_image, out_label = augment(image, label, Augment(1.0, 0.0, 0.0, flip=True), crop=32)
    assert out_image.shape == (32, 32, 3) and out_label.shape == (32, 32)
    assert (out_label[:20, 22:30] == 7).all() and (out_label[20:] == IGNORE_INDEX).all()  # flipped, padded below
    assert (out_image[:20, 22:30] == 255).all()


def test_poly_schedule_and_config_checks() -> None:
    assert poly_factor(0, 100, 0.9) == 1.0 and poly_factor(100, 100, 0.9) == 0.0
    with pytest.raises(ValueError, match="crop"):
        SegTrainConfig(images=Path("."), labels=Path("."), out=Path("."), crop=0)
    with pytest.raises(ValueError, match="architecture"):
        SegmenterConfig(arch="unet")


def test_missing_encoder_weights_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nothing is downloaded"):
        build_segmenter(TINY, tmp_path / "resnet18.pth")
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pth")
    model = build_segmenter(TINY, tmp_path / "resnet18.pth")
    assert model.encoder.conv1.weight.shape == (64, 3, 7, 7)


def _config(world: Path, out: Path, iterations: int) -> SegTrainConfig:
    imagenet = world / "imagenet"
    return SegTrainConfig(images=imagenet, labels=imagenet / "masks", out=out, model=TINY, iterations=iterations,
                          batch_size=2, crop=48, checkpoint_every=2, device="cpu", seed=3)


def test_cli_trains_and_evaluates_on_voc_layout(tiny_world: Path, tmp_path: Path) -> None:
    imagenet, voc = tiny_world / "imagenet", tiny_world / "voc" / "VOC2012"
    code = wsss_main(["train-segmenter", "--images", str(imagenet), "--labels", str(imagenet / "masks"), "--out",
                      str(tmp_path / "seg"), "--encoder", "resnet18", "--iterations", "2", "--batch-size", "2",
                      "--crop", "48", "--device", "cpu", "-q"])
    assert code == 0
    assert json.loads((tmp_path / "seg" / "train_config.json").read_text())["precision"] == "float32"
    code = wsss_main(["evaluate", "--checkpoint", str(tmp_path / "seg" / "model_final.pt"), "--voc-root", str(voc),
                      "--out", str(tmp_path / "val.json"), "--flip", "--save-predictions", str(tmp_path / "pred"),
                      "-q"])
    assert code == 0
    summary = json.loads((tmp_path / "val.json").read_text())
    assert summary["images"] == 16 and len(summary["per_class_iou"]) == 21
    assert list(summary["variants"]) == ["single-scale", "single-scale + flip"]  # scored apart, labelled
    assert summary["primary"] == "single-scale + flip" and summary["flip"] and summary["scales"] == [1.0]
    assert summary["mIoU"] == summary["variants"]["single-scale + flip"]["mIoU"]
    assert len(list((tmp_path / "pred").glob("*.png"))) == 16
    code = wsss_main(["score", "--pred", str(tmp_path / "pred"), "--gt", str(voc / "SegmentationClass"),
                      "--out", str(tmp_path / "score.json")])
    assert code == 2  # the ground-truth folder also holds train images without a prediction: refused, not skipped
    assert wsss_main(["train-segmenter", "--images", str(imagenet), "--labels", str(imagenet / "masks"), "--out",
                      str(tmp_path / "bad"), "--crop", "0"]) == 2
    with pytest.raises(SystemExit) as stop:
        wsss_main(["evaluate", "--checkpoint", str(tmp_path / "seg" / "model_final.pt"), "--voc-root", str(voc),
                   "--out", str(tmp_path / "bad.json"), "--scales", "0"])
    assert stop.value.code == 2 and not (tmp_path / "bad.json").exists()


def test_cpu_bf16_trains_in_bfloat16_and_a_float32_run_resumes_it(tiny_world: Path, tmp_path: Path) -> None:
    """--cpu-bf16 on: bfloat16 autocast on the CPU (recorded in train_config.json); precision is how a run
    computes, so a run started in bfloat16 goes on in float32 from its checkpoint."""
    imagenet = tiny_world / "imagenet"
    args = ["train-segmenter", "--images", str(imagenet), "--labels", str(imagenet / "masks"), "--out",
            str(tmp_path / "seg"), "--encoder", "resnet18", "--batch-size", "2", "--crop", "48", "--device", "cpu",
            "--checkpoint-every", "2", "-q"]
    assert wsss_main([*args, "--iterations", "2", "--cpu-bf16", "on"]) == 0
    assert json.loads((tmp_path / "seg" / "train_config.json").read_text())["precision"] == "bfloat16"
    state = torch.load(tmp_path / "seg" / "checkpoints" / "last.pt", weights_only=True)
    assert state["iteration"] == 2 and state["precision"] == "bfloat16"
    (tmp_path / "seg" / "model_final.pt").unlink()  # as if killed after its checkpoint: the rerun goes on from it
    assert wsss_main([*args, "--iterations", "2", "--cpu-bf16", "off"]) == 0
    assert json.loads((tmp_path / "seg" / "train_config.json").read_text())["precision"] == "float32"
    assert torch.load(tmp_path / "seg" / "model_final.pt", weights_only=True)["iteration"] == 2
    with pytest.raises(SystemExit):
        wsss_main([*args, "--cpu-bf16", "sometimes"])


def test_provenance_records_settings_code_and_environment(tmp_path: Path) -> None:
    assert wsss_main(["provenance", "--out", str(tmp_path), "--settings", '{"seed": 3, "wsss": {"shards": 2}}']) == 0
    assert json.loads((tmp_path / "settings.json").read_text()) == {"seed": 3, "wsss": {"shards": 2}}
    code = json.loads((tmp_path / "code.json").read_text())
    assert code["s4net"] and code["pipeline"] and code["python"]
    if (Path(__file__).resolve().parents[1] / ".git").exists():  # in a git checkout, the commit is recorded
        assert code["git"], code
    freeze = (tmp_path / "pip_freeze.txt").read_text().splitlines()
    assert any(line.lower().startswith("torch==") for line in freeze) and freeze == sorted(freeze, key=str.lower)
    assert wsss_main(["provenance", "--out", str(tmp_path / "x"), "--settings", "{seed"]) == 2
