"""S4Net inference under autocast, on boxes the caller fixes, with a minimum score, whatever the window grouping."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SMALL_S4NET

import s4net
from s4net.config import S4NetConfig
from s4net.models import S4Net


def busy_model(size: int = 96) -> S4Net:
    """A small random S4Net whose branch has spread weights and biases far from zero (so its masks vary and its
    background is not all zeros), with a map large enough for windows smaller than the map; ready for inference."""
    torch.manual_seed(0)
    model = s4net.build_model(S4NetConfig(backbone="resnet18", **{**SMALL_S4NET, "image_size": size}))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.branch.logits.weight.normal_(0, 0.05, generator=generator)
        for name, p in model.branch.named_parameters():
            if name.endswith("bias"):
                p.add_(torch.randn(p.shape, generator=generator) * 0.2)
    return model.for_inference()


@pytest.fixture(scope="module")
def images() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.rand(3, 96, 96, generator=generator), torch.rand(3, 72, 120, generator=generator)]


def mixed_boxes(count: int, size: int, seed: int) -> torch.Tensor:
    """Tensor[count, 4] seeded boxes inside a ``size`` square, from a few pixels to the whole square a side."""
    generator = torch.Generator().manual_seed(seed)
    wh = 4.0 + torch.rand(count, 2, generator=generator) ** 2 * (size - 4.0)
    xy = torch.rand(count, 2, generator=generator) * (size - wh)
    return torch.cat([xy, xy + wh], 1)


def fixed_boxes(images: list[torch.Tensor], largest: float = 1.0) -> list[torch.Tensor]:
    """Seeded boxes inside each image (its own pixels), sides up to ``largest`` x the image's."""
    boxes = []
    for i, image in enumerate(images):
        h, w = image.shape[-2:]
        unit = mixed_boxes(10, 1000, seed=i) / 1000 * largest
        boxes.append(unit * torch.tensor([w, h, w, h], dtype=torch.float32))
    return boxes


def test_predict_under_cpu_bfloat16_autocast_is_float32_and_close_to_float32(images: list[torch.Tensor]) -> None:
    model = busy_model()
    untouched = copy.deepcopy(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # first, so any state it leaves meets the float32 runs
        low = model.predict(images)
    for out, image in zip(low, images, strict=True):
        assert {k: v.dtype for k, v in out.items()} == dict.fromkeys(("boxes", "scores", "masks"), torch.float32)
        assert out["masks"].shape[1:] == (1, *image.shape[-2:]) and len(out["boxes"]) > 0
        assert all(bool(torch.isfinite(v).all()) for v in out.values())
    boxes = fixed_boxes(images, largest=0.4)  # windows smaller than the map, padded with the branch's background
    exact = model.masks_for_boxes(images, boxes)
    # the low-precision run leaves nothing behind (the branch's background cache) that changes float32 runs
    for a, b in zip(untouched.masks_for_boxes(images, boxes), exact, strict=True):
        assert b.dtype == torch.float32 and torch.equal(a, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        approx = model.masks_for_boxes(images, boxes)
    for a, b in zip(approx, exact, strict=True):
        assert a.dtype == torch.float32
        assert (a - b).abs().max() < 0.05 and (a - b).abs().mean() < 0.01
    reference = untouched.predict(images)  # masks_for_boxes is predict's own branch and paste
    fixed = untouched.masks_for_boxes(images, [out["boxes"] for out in reference])
    for masks, out in zip(fixed, reference, strict=True):
        torch.testing.assert_close(masks, out["masks"], rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def model() -> S4Net:
    return busy_model()


def test_min_score_drops_proposals_before_the_branch(model: S4Net, images: list[torch.Tensor]) -> None:
    counts: list[int] = []
    hook = model.branch.register_forward_pre_hook(lambda _module, args: counts.append(args[0].shape[0]))
    request = model.min_score
    full = model.predict(images)
    ran_on_all = sum(counts)
    scores = torch.cat([out["scores"] for out in full]).sort().values
    threshold = float(scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2  # about half pass
    passing = int((scores >= threshold).sum())
    assert 0 < passing < len(scores)
    model.min_score = threshold
    counts.clear()
    try:
        kept = model.predict(images)
    finally:
        model.min_score = request
        hook.remove()
    assert ran_on_all == len(scores) and sum(counts) == passing
    for mine, out in zip(kept, full, strict=True):
        keep = out["scores"] >= threshold
        assert torch.equal(mine["boxes"], out["boxes"][keep]) and torch.equal(mine["scores"], out["scores"][keep])
        torch.testing.assert_close(mine["masks"], out["masks"][keep], rtol=0, atol=1e-5)


def test_masks_for_boxes_refuses_boxes_that_do_not_fit_the_images(model: S4Net, images: list[torch.Tensor]) -> None:
    with pytest.raises(ValueError, match="1 box tensors for 2 images"):
        model.masks_for_boxes(images, [torch.zeros(0, 4)])
    with pytest.raises(ValueError, match=r"Tensor\[K, 4\].*\(4,\)"):
        model.masks_for_boxes(images, [torch.zeros(4), torch.zeros(0, 4)])
    empty = model.masks_for_boxes(images, [torch.zeros(0, 4), torch.zeros(0, 4)])
    assert [m.shape for m in empty] == [(0, 1, 96, 96), (0, 1, 72, 120)]


def test_min_score_is_validated_and_set_by_for_inference(model: S4Net) -> None:
    assert model.min_score == 0.0
    for bad in (-0.1, 1.0, 2.0):
        with pytest.raises(ValueError, match="min_score"):
            model.min_score = bad
    other = s4net.build_model(S4NetConfig(backbone="resnet18", **SMALL_S4NET)).for_inference(min_score=0.25)
    assert other.min_score == 0.25
    with pytest.raises(ValueError, match=r"min_score=1.0 must be in \[0, 1\)"):
        s4net.build_model(S4NetConfig(backbone="resnet18", **SMALL_S4NET)).for_inference(min_score=1.0)


def test_predict_cli_min_score_keeps_the_proposals_above_it(checkpoint: Path, tmp_path: Path, capsys,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from s4net.cli import main as s4net_main
    from s4net.io.images import save_image

    save_image(tmp_path / "images" / "a.png", np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8))

    def predict(*extra: str) -> list[dict]:
        out = tmp_path / f"out{len(extra)}"
        argv = ["predict", "--checkpoint", str(checkpoint), "--images", str(tmp_path / "images"), "--out", str(out),
                "--device", "cpu", "-q", *extra]
        assert s4net_main(argv) == 0
        return json.loads((out / "results.json").read_text())

    every = predict()
    scores = sorted(r["score"] for r in every)
    threshold = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2
    compiled: list[S4Net] = []  # --compile reaches the model (compiling itself: the slow test below)
    monkeypatch.setattr(S4Net, "compile_dense", lambda self: compiled.append(self) or self)
    kept = predict("--min-score", str(threshold), "--compile", "--deterministic")
    assert len(compiled) == 1
    assert len(every) == 20 and 0 < len(kept) < len(every)
    assert sorted(r["score"] for r in kept) == [s for s in scores if s >= threshold]
    capsys.readouterr()
    assert s4net_main(["predict", "--checkpoint", str(checkpoint), "--images", str(tmp_path / "images"), "--out",
                       str(tmp_path / "bad"), "--device", "cpu", "-q", "--min-score", "1"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "--min-score" in error[0] and "[0, 1)" in error[0], error


def exact_cells(box: torch.Tensor, map_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Cells (x1, y1, x2, y2) of a box plus one cell (what the paste reads), inside the map."""
    x1, y1, x2, y2 = box.tolist()
    return (max(int(x1 // 8) - 1, 0), max(int(y1 // 8) - 1, 0),
            min(int(-(-x2 // 8)) + 1, map_size[1]), min(int(-(-y2 // 8)) + 1, map_size[0]))


def grouped_like_whole_map(model: S4Net, features: torch.Tensor, boxes: torch.Tensor, index: torch.Tensor,
                           rtol: float = 1e-4, atol: float = 1e-5) -> dict[str, int]:
    """Assert that every grouping's branch logits equal the whole map's on each box and one cell around it;
    returns how many canvases (branch calls) each grouping ran."""
    from s4net.models.windows import BRANCH_GROUPINGS

    map_size = tuple(features.shape[-2:])
    model.config.branch_crop = False
    try:
        (whole,) = model.segment(features, boxes, index, exact=True)
    finally:
        model.config.branch_crop = True
    calls = {}
    for grouping in BRANCH_GROUPINGS:
        model.branch_grouping = grouping
        outputs = model.segment(features, boxes, index, exact=True)
        calls[grouping] = len(outputs)
        assert sorted(torch.cat([out.members for out in outputs]).tolist()) == list(range(len(boxes)))
        for out in outputs:
            origin = (out.extent[:, :2] / 8).round().long().tolist()
            for j, i in enumerate(out.members.tolist()):
                x1, y1, x2, y2 = exact_cells(boxes[i].cpu(), map_size)
                x0, y0 = origin[j]
                torch.testing.assert_close(out.logits[j, :, y1 - y0 : y2 - y0, x1 - x0 : x2 - x0].float(),
                                           whole.logits[i, :, y1:y2, x1:x2].float(), rtol=rtol, atol=atol)
    model.branch_grouping = "auto"
    return calls


def test_every_branch_grouping_gives_the_whole_maps_outputs(model: S4Net) -> None:
    generator = torch.Generator().manual_seed(2)
    features = torch.relu(torch.randn(2, model.config.compress_channels, 24, 24, generator=generator))
    boxes = mixed_boxes(10, 192, seed=3)
    index = torch.arange(10) % 2
    with torch.inference_mode():
        calls = grouped_like_whole_map(model, features, boxes, index)
    assert calls["single"] == 1 and calls["cost"] > calls["coarse"] >= 1 and calls["auto"] == calls["cost"]
    with pytest.raises(ValueError, match="branch_grouping='one'.*single"):
        model.branch_grouping = "one"


@pytest.mark.slow  # compiling the dense part takes minutes on this CPU
def test_compiled_dense_part_gives_the_eager_detections(images: list[torch.Tensor]) -> None:
    model = busy_model()
    eager = model.predict(images)
    compiled = model.compile_dense().predict(images)
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a["masks"], b["masks"], rtol=1e-4, atol=1e-4)


def test_speed_bench_records_a_failing_configuration_and_keeps_every_row(tmp_path: Path) -> None:
    from bench.speed import FP32, Recorder, amp_precision, time_contenders

    def crash() -> None:
        raise RuntimeError("Index put requires the source and destination dtypes match\nmore detail")

    out = tmp_path / "speed.json"
    recorder = Recorder({"benchmark": "test"}, out)
    times, errors = time_contenders({"before": lambda: None, "broken": crash, "after": lambda: None}, FP32, 0, 2,
                                    torch.device("cpu"))
    assert set(times) == {"before", "after"} and all(t["repeats"] == 2 for t in times.values())
    assert errors == {"broken": "RuntimeError: Index put requires the source and destination dtypes match"}
    recorder.add({"model": "before", **times["before"]})
    assert [row["model"] for row in json.loads(out.read_text())["runs"]] == ["before"]  # on disk after one row
    recorder.failed({"model": "broken"}, RuntimeError("out of memory"))
    recorder.add({"model": "after", **times["after"]})
    rows = json.loads(out.read_text())["runs"]
    assert [row["model"] for row in rows] == ["before", "broken", "after"]
    assert rows[1]["error"] == "RuntimeError: out of memory" and "median_s" in rows[2]
    assert (amp_precision(torch.device("cpu")).name, amp_precision(torch.device("cpu")).dtype) == ("bf16",
                                                                                                 torch.bfloat16)


@pytest.mark.slow  # minutes: ResNet-50, S4Net and Mask R-CNN at 64 px, float32 and bfloat16, batch 1 and 2
def test_speed_bench_times_both_precisions_and_every_grouping(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "speed.json"
    result = subprocess.run([sys.executable, "-m", "bench.speed", "--size", "64", "--batch", "1", "2", "--amp",
                             "--repeats", "1", "--warmup", "0", "--threads", "1", "--backbones", "--proposals", "3",
                             "--groupings", "cost", "single", "--skip-memory", "--out", str(out)],
                            capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    rows = report["runs"]
    assert not [row for row in rows if "error" in row]
    main = [row for row in rows if "batch" in row]
    assert {(row["batch"], row["precision"]) for row in main} == {(1, "fp32"), (1, "bf16"), (2, "fp32"), (2, "bf16")}
    for precision in ("fp32", "bf16"):
        s4 = [row for row in main if row["precision"] == precision and row["model"].startswith("s4net")]
        assert {row["model"].rsplit("grouping: ", 1)[1] for row in s4} == {"cost]", "single]"}
        assert all(row["images_per_s"] > 0 and row["speedup_vs_maskrcnn"] > 0 for row in s4)
    sweep = {row["windows"] for row in rows if row["model"] == "s4net segmentation branch"}
    assert {"exact windows (inference, grouping: cost)", "exact windows (inference, grouping: single)"} <= sweep


def test_inference_runs_in_bfloat16_on_cuda_by_default_and_float32_elsewhere(monkeypatch) -> None:
    from s4net.inference import inference_autocast

    assert inference_autocast("cpu") is None and inference_autocast("cpu", amp=False) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert inference_autocast("cuda:0") is torch.bfloat16
    assert inference_autocast("cuda", amp=False) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100
    assert inference_autocast("cuda") is torch.float16


def test_run_detector_under_autocast_yields_float32_detections(model: S4Net, tmp_path: Path) -> None:
    """What ``predict`` and ``proxy-labels`` run on CUDA by default, here with CPU bfloat16 (the same code path)."""
    from s4net.inference import run_detector
    from s4net.io.images import save_image

    path = tmp_path / "a.png"
    save_image(path, (np.random.default_rng(0).random((80, 64, 3)) * 255).astype(np.uint8))
    (det,) = run_detector(model, [("a", path)], progress=False, autocast=torch.bfloat16)
    assert det.boxes.dtype == det.scores.dtype == det.masks.dtype == np.float32
    assert det.masks.shape[1:] == (80, 64) and np.isfinite(det.masks).all()


def test_the_precision_enters_the_proxy_labels_fingerprint_only_when_not_float32() -> None:
    """Labels made in float32 before the option existed still count as done; bfloat16 labels are others."""
    from pipeline.proxy_labels.runner import ProxyLabelSettings

    settings = ProxyLabelSettings()
    plain = settings.fingerprint("abc", None)
    assert settings.fingerprint("abc", None, "float32") == plain
    assert settings.fingerprint("abc", None, "bfloat16") != plain
