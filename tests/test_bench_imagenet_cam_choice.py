"""bench/imagenet_cam_choice.py on 2 images of each real set (the JSON the README's `--cam imagenet` numbers quote)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
import torch

from bench.imagenet_cam_choice import DEV_THRESHOLDS, TEST_THRESHOLDS, main
from pipeline.cues.imagenet_cam import POOLINGS, ImageNetCamConfig
from s4net.models.efficientnet_lite import INSTALL_HINT, PACKAGE


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The bench sets torch's thread count; put it back after."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_the_bench_reports_every_variant_the_samples_and_the_test_set(realdata: Path, tmp_path: Path,
                                                                       one_thread: None) -> None:
    pytest.importorskip(PACKAGE, reason=INSTALL_HINT)
    out = tmp_path / "choice.json"
    assert main(["--realdata", str(realdata), "--limit", "2", "--threads", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    default = ImageNetCamConfig()
    assert report["default"] == {"size": default.size, "output_stride": default.output_stride,
                                 "pooling": default.pooling, "cam_threshold": 0.3}

    dev = report["dev"]
    assert dev["images"] == 2 and dev["thresholds"] == list(DEV_THRESHOLDS)
    settings = [(v["pooling"], v["size"], v["output_stride"]) for v in dev["variants"]]
    assert settings == [*((p, 448, 16) for p in POOLINGS), ("max", 224, 16), ("max", 320, 16), ("max", 640, 16),
                        ("max", 448, 32)]
    for variant in dev["variants"]:
        assert set(variant["mIoU"]) == {"0.25", "0.3"}
        assert all(0.0 < value <= 1.0 for value in variant["mIoU"].values()), variant

    samples = report["imagenet_samples"]["poolings"]
    assert set(samples) == set(POOLINGS)
    for counts in samples.values():
        assert counts["images"] == 2 and counts["hits"] + len(counts["misses"]) == 2

    test = report["test"]
    assert test["images"] == 2 and test["tags"] == "masks" and 0 <= test["multi_keyword_images"] <= 2
    assert list(test["cam"]) == [f"{t:g}" for t in TEST_THRESHOLDS]
    for scores in [*test["cam"].values(), test["cam_saliency_oracle"], test["saliency_oracle"]]:
        assert 0.0 < scores["mIoU"] <= 1.0 and 0.0 < scores["mIoU_ignore_as_background"] <= 1.0, scores
        assert 0.0 < scores["coverage"] <= 1.0
    assert report["run"]["limit"] == 2 and len(report["run"]["weights_sha256"]) == 64


def test_a_missing_realdata_folder_is_one_error(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                one_thread: None) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--realdata", str(tmp_path), "--limit", "1"])
    assert stopped.value.code == 2
    assert "coco128seg_voc: not a directory" in capsys.readouterr().err
