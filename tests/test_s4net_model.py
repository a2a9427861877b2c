"""S4Net as a whole: shapes through every backbone and masking, the train/eval contract,
checkpoints, training resume equivalence, NaN stop and the model CLI commands."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

import s4net
from s4net.checkpoint import read_checkpoint, save_checkpoint
from s4net.cli import main as s4net_main
from s4net.config import BACKBONES, MASKINGS, S4NetConfig
from s4net.errors import InputError
from s4net.models.windows import window_groups
from s4net.train import TrainConfig, TrainingDiverged, train

SMALL = dict(norm="bn", image_size=64, fpn_channels=32, head_channels=32, compress_channels=16, branch_channels=(16, 8))


def _targets(height: int, width: int) -> list[dict[str, torch.Tensor]]:
    masks = torch.zeros(2, height, width)
    masks[0, 5:30, 4:40] = 1
    masks[1, 20:50, 30:60] = 1
    return [
        {"boxes": torch.tensor([[4.0, 5.0, 40.0, 30.0], [30.0, 20.0, 60.0, 50.0]]), "masks": masks},
        {"boxes": torch.zeros((0, 4)), "masks": torch.zeros((0, height, width))},
    ]


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_trains_and_detects(backbone: str) -> None:
    torch.manual_seed(0)
    model = s4net.build_model(S4NetConfig(backbone=backbone, **SMALL))
    images = [torch.rand(3, 56, 70), torch.rand(3, 64, 64)]
    losses = model(images, _targets(56, 70))
    assert set(losses) == {"loss_objectness", "loss_box", "loss_mask"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    out = model(images)
    assert len(out) == 2
    assert out[0]["masks"].shape[1:] == (1, 56, 70) and out[1]["masks"].shape[1:] == (1, 64, 64)


@pytest.mark.parametrize("masking", MASKINGS)
def test_every_masking_variant_trains_and_detects(masking: str) -> None:
    torch.manual_seed(0)
    model = s4net.build_model(S4NetConfig(backbone="resnet18", masking=masking, **SMALL))
    images = [torch.rand(3, 56, 70), torch.rand(3, 64, 64)]
    losses = model(images, _targets(56, 70))
    sum(losses.values()).backward()
    grads = [p.grad for p in model.branch.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    out = model(images)[0]
    k = out["boxes"].shape[0]
    assert 0 < k <= 20
    assert out["scores"].shape == (k,) and torch.all(out["scores"][:-1] >= out["scores"][1:])
    assert out["masks"].shape == (k, 1, 56, 70)
    assert out["masks"].min() >= 0 and out["masks"].max() <= 1
    boxes = out["boxes"]
    assert torch.all(boxes[:, 0] >= 0) and torch.all(boxes[:, 2] <= 70) and torch.all(boxes[:, 3] <= 56)
    # masks are zero outside their (pixel-rounded) boxes
    for box, mask in zip(boxes, out["masks"][:, 0], strict=True):
        x1, y1, x2, y2 = box.tolist()
        outside = mask.clone()
        outside[int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))] = 0
        assert outside.abs().max() == 0


def test_train_eval_contract() -> None:
    model = s4net.build_model(S4NetConfig(backbone="resnet18", detections_per_image=5, **SMALL))
    with pytest.raises(ValueError, match="needs targets"):
        model([torch.rand(3, 64, 64)])
    with pytest.raises(ValueError, match="Tensor\\[3, H, W\\]"):
        model.predict([torch.rand(64, 64)])
    out = model.predict(torch.rand(3, 3, 64, 64))
    assert len(out) == 3 and all(o["boxes"].shape[0] <= 5 for o in out)
    assert not model.training


def test_branch_crop_does_not_change_predictions() -> None:
    torch.manual_seed(1)
    config = S4NetConfig(backbone="resnet18", **{**SMALL, "image_size": 320})
    model = s4net.build_model(config).eval()
    with torch.no_grad():  # biases far from zero, so the windows' background padding matters
        for name, p in model.branch.named_parameters():
            p.add_(torch.randn_like(p) * (0.2 if name.endswith("bias") else 0.02))
    images = [torch.rand(3, 320, 320), torch.rand(3, 200, 260)]
    cropped = model(images)
    boxes = torch.cat([o["boxes"] * torch.tensor([320 / w, 320 / h] * 2)
                       for o, (h, w) in zip(cropped, [(320, 320), (200, 260)], strict=True)])
    first, last = model.branch_spans(boxes, (40, 40), exact=True)
    assert len(window_groups(first, last)) > 1  # several window sizes are exercised
    assert bool(((last - first).prod(1) < 40 * 40).any())  # and some windows are smaller than the map
    model.config.branch_crop = False
    whole = model(images)
    for a, b in zip(cropped, whole, strict=True):
        torch.testing.assert_close(a["masks"], b["masks"], rtol=1e-4, atol=1e-5)


def test_folding_batchnorm_keeps_detections_and_stops_training(tmp_path: Path) -> None:
    torch.manual_seed(2)
    for norm in ("frozen_bn", "bn"):
        model = s4net.build_model(S4NetConfig(backbone="resnet18", **{**SMALL, "norm": norm}))
        for module in model.modules():  # non-trivial statistics, so folding has something to do
            if hasattr(module, "running_var"):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.uniform_(-0.2, 0.2)
        model.eval()
        images = [torch.rand(3, 64, 64)]
        before = model(images)[0]
        norms = sum(1 for m in model.modules() if hasattr(m, "running_var"))
        model.fold_batchnorm()
        assert sum(1 for m in model.modules() if hasattr(m, "running_var")) == 0 and norms == 20
        after = model(images)[0]
        torch.testing.assert_close(after["boxes"], before["boxes"], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(after["masks"], before["masks"], rtol=1e-4, atol=1e-4)
        with pytest.raises(RuntimeError, match="folded"):
            model.train()
        with pytest.raises(ValueError, match="folded"):
            save_checkpoint(tmp_path / "folded.pt", model)


def test_inference_mode_with_channels_last_gives_the_same_detections() -> None:
    torch.manual_seed(3)
    model = s4net.build_model(S4NetConfig(backbone="resnet18", **{**SMALL, "image_size": 128})).eval()
    images = [torch.rand(3, 128, 128), torch.rand(3, 90, 150)]
    before = model(images)
    model.for_inference()
    assert model.channels_last and model.compress.weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(model(images), before, strict=True):
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(a["masks"], b["masks"], rtol=1e-4, atol=1e-4)


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="backbone='resnet9'.*resnet18"):
        S4NetConfig(backbone="resnet9")
    with pytest.raises(ValueError, match="image_size=300"):
        S4NetConfig(image_size=300)
    with pytest.raises(ValueError, match="unknown S4NetConfig field\\(s\\) \\['colour'\\]"):
        S4NetConfig.from_dict({"colour": 1})
    assert S4NetConfig.from_dict(json.loads(json.dumps(S4NetConfig().to_dict()))) == S4NetConfig()


@pytest.mark.parametrize("text, key", [("backbone: resnet18\nextra: {}\n", "extra"),
                                       ("backbone: resnet18\nfpn_chanels: 64\n", "fpn_chanels")])
def test_a_model_config_with_an_unknown_key_fails_in_one_line_naming_it(
        tiny_world: Path, tmp_path: Path, capsys, text: str, key: str) -> None:
    config = tmp_path / "model.yaml"
    config.write_text(text)
    salient = tiny_world / "salient"
    code = s4net_main(["train", "--annotations", str(salient / "train.json"), "--images", str(salient / "images"),
                       "--out", str(tmp_path / "out"), "--model-config", str(config), "--size", "64",
                       "--iterations", "1", "--device", "cpu", "-q"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1, error
    assert f"unknown S4NetConfig field(s) ['{key}']" in error[0] and str(config) in error[0]
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_whose_config_has_an_unknown_key_is_refused(tmp_path: Path) -> None:
    model = s4net.build_model(S4NetConfig(backbone="resnet18", **SMALL))
    path = tmp_path / "model.pt"
    save_checkpoint(path, model)
    payload = read_checkpoint(path)
    torch.save({**payload, "config": {**payload["config"], "colour": "red"}}, tmp_path / "odd.pt")
    refusal = r"odd.pt: bad config in checkpoint: unknown S4NetConfig field\(s\) \['colour'\]"
    with pytest.raises(InputError, match=refusal):
        s4net.load_checkpoint(tmp_path / "odd.pt")
    # release 0.1.0 stored a field `extra: {}` that nothing read: such checkpoints load as before
    torch.save({**payload, "config": {**payload["config"], "extra": {}}}, tmp_path / "old.pt")
    assert s4net.load_checkpoint(tmp_path / "old.pt").config == model.config


def test_pretrained_weights_missing_gives_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nothing is downloaded at run time"):
        s4net.build_model(S4NetConfig(backbone="resnet18", pretrained=str(tmp_path / "resnet18.pth")))


def test_pretrained_weights_load_from_a_local_file(tmp_path: Path) -> None:
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = s4net.build_model(S4NetConfig(backbone="resnet18", pretrained=str(path)))
    assert torch.equal(model.backbone.stem[0].weight, reference.conv1.weight)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoint_round_trip_and_refusals(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = s4net.build_model(S4NetConfig(backbone="resnet18", **SMALL)).eval()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, iteration=3)
    loaded = s4net.load_checkpoint(path)
    assert loaded.config == model.config
    image = [torch.rand(3, 64, 64)]
    torch.testing.assert_close(loaded(image)[0]["masks"], model(image)[0]["masks"])

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "s4net-checkpoint", "x": Payload()}))
    with pytest.raises(InputError, match="not a loadable weights-only checkpoint"):
        s4net.load_checkpoint(evil)
    payload = read_checkpoint(path)
    payload["format_version"] = 99
    other = tmp_path / "other.pt"
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    other.write_bytes(buffer.getvalue())
    with pytest.raises(InputError, match="format_version 99"):
        s4net.load_checkpoint(other)


def _train_config(world: Path, out: Path, **changes) -> TrainConfig:
    salient = world / "salient"
    values = dict(
        annotations=salient / "train.json", images=salient / "images", out=out, iterations=6, batch_size=2,
        lr=0.01, lr_steps=(4,), checkpoint_every=3, log_every=1, seed=3, device="cpu", scale_jitter=(0.7, 1.3),
        model=S4NetConfig(backbone="resnet18", **SMALL),
    )
    values.update(changes)
    return TrainConfig(**values)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model"]


# fp32: also tests/reliability/test_every_trainer.py; bf16 autocast only here
@pytest.mark.parametrize("cpu_bf16", [pytest.param(False, marks=pytest.mark.slow), True], ids=["fp32", "bf16"])
def test_resume_after_kill_equals_uninterrupted_run(tiny_world: Path, tmp_path: Path, monkeypatch,
                                                    cpu_bf16: bool) -> None:
    straight = train(_train_config(tiny_world, tmp_path / "straight", cpu_bf16=cpu_bf16), progress=False)

    import s4net.train as train_module

    real = train_module.learning_rate_factor

    def killed_at_4(iteration: int, cfg: TrainConfig) -> float:
        if iteration == 4:
            raise KeyboardInterrupt  # stands in for SIGKILL after the checkpoint at 3
        return real(iteration, cfg)

    monkeypatch.setattr(train_module, "learning_rate_factor", killed_at_4)
    with pytest.raises(KeyboardInterrupt):
        train(_train_config(tiny_world, tmp_path / "resumed", cpu_bf16=cpu_bf16), progress=False)
    assert read_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["iteration"] == 3
    assert not (tmp_path / "resumed" / "model_final.pt").exists()
    monkeypatch.setattr(train_module, "learning_rate_factor", real)
    resumed = train(_train_config(tiny_world, tmp_path / "resumed", cpu_bf16=cpu_bf16), progress=False)
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2, 3, 4, 5, 6]
    # a finished run is not redone, in either precision (precision is how a run computes, not part of its
    # resume key: a CPU run may go on on a GPU); a run with other settings refuses to resume
    assert all(v.dtype != torch.bfloat16 for v in a.values()), "autocast must leave the weights in float32"
    assert train(_train_config(tiny_world, tmp_path / "resumed", cpu_bf16=cpu_bf16), progress=False) == resumed
    assert train(_train_config(tiny_world, tmp_path / "resumed", cpu_bf16=not cpu_bf16), progress=False) == resumed
    with pytest.raises(InputError, match="different training settings"):
        train(_train_config(tiny_world, tmp_path / "resumed", cpu_bf16=cpu_bf16, lr=0.02), progress=False)


def test_periodic_snapshots_are_pruned_and_keep_their_own_state(tiny_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(_train_config(tiny_world, out, checkpoint_every=1, keep_snapshots=2, scale_jitter=None), progress=False)
    folder = out / "checkpoints"
    assert sorted(p.name for p in folder.glob("iter_*.pt")) == ["iter_0000004.pt", "iter_0000005.pt"]
    snapshot, last = read_checkpoint(folder / "iter_0000005.pt"), read_checkpoint(folder / "last.pt")
    assert (snapshot["iteration"], last["iteration"]) == (5, 6)
    # the snapshot is not the file last.pt became afterwards (hard links must not alias later writes)
    assert any(not torch.equal(snapshot["model"][k], last["model"][k]) for k in last["model"])
    with pytest.raises(ValueError, match="keep_snapshots"):
        _train_config(tiny_world, out, keep_snapshots=-1)


def test_cpu_bf16_choice() -> None:
    from s4net.engine import resolve_cpu_bf16

    assert resolve_cpu_bf16("on") is True and resolve_cpu_bf16("off") is False
    assert isinstance(resolve_cpu_bf16("auto"), bool)
    with pytest.raises(ValueError, match="on, off or auto"):
        resolve_cpu_bf16("yes")


def test_nan_loss_stops_with_last_good_checkpoint(tiny_world: Path, tmp_path: Path, monkeypatch) -> None:
    from s4net.models.s4net import S4Net

    real = S4Net._losses
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        losses = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 5:
            losses["loss_box"] = losses["loss_box"] * float("nan")
        return losses

    monkeypatch.setattr(S4Net, "_losses", poisoned)
    with pytest.raises(TrainingDiverged, match="not finite at iteration 4.*last.pt"):
        train(_train_config(tiny_world, tmp_path / "run"), progress=False)
    state = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["iteration"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = s4net.build_model(S4NetConfig(backbone="resnet18", **{**SMALL, "image_size": 96})).eval()
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, model)
    return path


def test_cli_evaluate_writes_all_metrics(tiny_world: Path, tmp_path: Path, random_checkpoint: Path) -> None:
    out = tmp_path / "metrics.json"
    salient = tiny_world / "salient"
    args = ["evaluate", "--checkpoint", str(random_checkpoint), "--annotations", str(salient / "test.json"),
            "--images", str(salient / "images"), "--out", str(out), "--device", "cpu", "-q"]
    assert s4net_main(args) == 0
    metrics = json.loads(out.read_text())
    for key in ("mAP50", "mAP70", "mAP50_occluded", "mAP70_occluded"):
        assert key in metrics and (metrics[key] is None or 0.0 <= metrics[key] <= 1.0)
    assert s4net_main(args + ["--protocol", "original"]) == 0
    assert json.loads(out.read_text())["protocol"] == "original"


def test_cli_predict_on_real_photos(realdata: Path, tmp_path: Path, random_checkpoint: Path) -> None:
    label_folders = {"masks", "SegmentationClass", "SegmentationObject"}
    every = sorted(
        p for p in realdata.rglob("*")
        if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.parent.name not in label_folders
    )
    assert every, "no real photos found"
    # four photos of each source: every source's formats and sizes, at a fraction of the time of all 145
    photos = [p for source in sorted({p.relative_to(realdata).parts[0] for p in every})
              for p in [q for q in every if q.relative_to(realdata).parts[0] == source][:4]]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "pred"
    argv = ["predict", "--checkpoint", str(random_checkpoint), "--images", *map(str, photos), str(broken),
            "--out", str(out), "--overlays", "--score-threshold", "0", "--device", "cpu", "-q"]
    assert s4net_main(argv) == 0
    skipped = json.loads((out / "skipped.json").read_text())
    assert [s["image"] for s in skipped] == [str(broken)]
    images = json.loads((out / "images.json").read_text())
    assert len(images["images"]) == len(photos)
    gt = COCO()
    gt.dataset = {**images, "annotations": []}
    gt.createIndex()
    results = json.loads((out / "results.json").read_text())
    assert results and gt.loadRes(results)  # valid COCO results: pycocotools accepts them
    assert len(list((out / "overlays").glob("*.png"))) == len(photos)


def test_gradient_maps_binary_vs_ternary(tiny_world: Path, tmp_path: Path, random_checkpoint: Path) -> None:
    from s4net.data.coco import SalientInstanceDataset
    from s4net.reproduction.gradient_maps import gradient_map

    model = s4net.load_checkpoint(random_checkpoint)
    salient = tiny_world / "salient"
    sample = SalientInstanceDataset(salient / "test.json", salient / "images")[0]
    image = torch.from_numpy(sample.image.copy()).permute(2, 0, 1).float() / 255
    box, mask = torch.from_numpy(sample.boxes[0]), torch.from_numpy(sample.masks[0])
    binary = gradient_map(model, image, box, mask, "binary")
    ternary = gradient_map(model, image, box, mask, "ternary")
    x1, y1, x2, y2 = binary.box / 8
    ring = np.zeros_like(binary.values, dtype=bool)
    rx1, ry1, rx2, ry2 = ternary.ring / 8
    ring[max(int(ry1), 0) : int(np.ceil(ry2)), max(int(rx1), 0) : int(np.ceil(rx2))] = True
    ring[int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))] = False
    assert ring.any()
    assert binary.values[ring].max() == 0  # binary masking zeroes the ring: no gradient reaches it
    assert ternary.values[ring].max() > 0  # ternary masking feeds the ring (sign-flipped) to the branch
    out = tmp_path / "explain"
    argv = ["explain", "--checkpoint", str(random_checkpoint), "--annotations", str(salient / "test.json"),
            "--images", str(salient / "images"), "--out", str(out), "--masking", "binary", "ternary",
            "--limit", "2", "--device", "cpu", "-q"]
    assert s4net_main(argv) == 0
    assert len(list(out.glob("*_gradients.png"))) == 2
