"""Outside saliency maps as the saliency cues' source (issue 19): hand-made maps -> exact labels, skips, reuse,
WSSS-BED's fusion rule, and the oracle maps of ``wsss saliency-from-masks``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.classes import CLASS_INDEX, IGNORE_INDEX
from pipeline.cli import main as wsss_main
from pipeline.cues import make_cue
from pipeline.cues.keyword_assignment import AssignmentConfig
from pipeline.cues.label_painting import ProxyConfig, map_saliency_labels, wsss_bed_labels
from pipeline.cues.saliency_maps import SaliencyConfig, read_saliency_map
from pipeline.datasets.imagenet import KeywordEntry, write_keyword_table
from pipeline.datasets.voc import read_voc_label
from pipeline.proxy_labels.manifest import read_manifests
from pipeline.proxy_labels.runner import ProxyLabelSettings

CAT, DOG = CLASS_INDEX["cat"], CLASS_INDEX["dog"]
H, W = 20, 40


def _map_two_objects() -> np.ndarray:
    """uint8[20, 40]: a left object (rows 5-14, columns 2-17) at 200, a right one (columns 22-37) at 60,
    and a faint patch (rows 0-2, columns 0-9) at 50, just under the default threshold (0.2 * 255 = 51)."""
    values = np.zeros((H, W), dtype=np.uint8)
    values[5:15, 2:18] = 200
    values[5:15, 22:38] = 60
    values[0:3, 0:10] = 50
    return values


def _expected_split(keywords: list[str], threshold_level: int = 51) -> np.ndarray:
    """Our rule with no border band: background off the map, the single keyword on it (ignore for two)."""
    salient = _map_two_objects() >= threshold_level
    return np.where(salient, CLASS_INDEX[keywords[0]] if len(keywords) == 1 else IGNORE_INDEX, 0).astype(np.uint8)


def _dataset(root: Path) -> tuple[Path, Path]:
    """Four images with keywords and a maps folder: two good maps, one missing, one of the wrong size."""
    images, maps = root / "images", root / "maps"
    entries = [("train/a/one.png", ("cat",)), ("train/a/two.png", ("cat", "dog")), ("train/b/three.png", ("dog",)),
               ("train/b/four.png", ("dog",))]
    rng = np.random.default_rng(0)
    for name, _ in entries:
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(images / name)
    for name in ("train/a/one.png", "train/a/two.png"):
        (maps / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_map_two_objects()).save(maps / name)
    (maps / "train/b").mkdir(parents=True)
    Image.fromarray(np.zeros((H, W + 1), dtype=np.uint8)).save(maps / "train/b/four.png")  # one column too many
    write_keyword_table(images / "keywords.csv", [KeywordEntry(image=n, keywords=k) for n, k in entries])
    return images, maps


def _args(images: Path, maps: Path, out: Path, *extra: str) -> list[str]:
    return ["proxy-labels", "--images", str(images), "--keywords", str(images / "keywords.csv"), "--out", str(out),
            "--saliency-maps", str(maps), "--border", "0", "--device", "cpu", "-q", *extra]


def _label(out: Path, name: str) -> np.ndarray:
    return read_voc_label(out / "labels" / Path(name).with_suffix(".png"))


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_map_labels_follow_the_threshold_exactly() -> None:
    saliency = _map_two_objects() / 255.0
    salient = SaliencyConfig().salient(saliency)
    assert salient[0, 0] == (50 >= 51)  # the faint patch is just under 0.2
    assert SaliencyConfig(threshold=50 / 255).salient(saliency)[0, 0]  # a grey level on the threshold is salient
    np.testing.assert_array_equal(map_saliency_labels(salient, ["cat"], ProxyConfig(border=0)),
                                  _expected_split(["cat"]))
    np.testing.assert_array_equal(map_saliency_labels(salient, ["cat", "dog"], ProxyConfig(border=0)),
                                  _expected_split(["cat", "dog"]))
    # a higher threshold drops the right object (60 < 0.3 * 255)
    high = SaliencyConfig(threshold=0.3).salient(saliency)
    np.testing.assert_array_equal(map_saliency_labels(high, ["cat"], ProxyConfig(border=0)),
                                  _expected_split(["cat"], threshold_level=77))
    # the border band is ignore, as in every cue
    banded = map_saliency_labels(salient, ["cat"], ProxyConfig(border=1))
    assert banded[5, 2] == IGNORE_INDEX and banded[10, 10] == CAT and banded[4, 2] == IGNORE_INDEX


def _cams() -> np.ndarray:
    """Cat strong on the left half, dog strong on columns 20-29 and weak (0.05) on 30-39."""
    maps = np.zeros((2, H, W), dtype=np.float32)
    maps[0, :, :20] = 1.0
    maps[1, :, 20:30] = 0.8
    maps[1, :, 30:] = 0.05
    return maps


def test_wsss_bed_rule_names_salient_pixels_by_the_cam_alone() -> None:
    salient = SaliencyConfig().salient(_map_two_objects() / 255.0)
    labels = wsss_bed_labels(salient, ["cat", "dog"], _cams(), cam_threshold=0.1)
    expected = np.zeros((H, W), dtype=np.uint8)
    expected[5:15, 2:18] = CAT
    expected[5:15, 22:30] = DOG
    expected[5:15, 30:38] = IGNORE_INDEX  # salient, but the dog CAM (0.05) is under the threshold
    np.testing.assert_array_equal(labels, expected)
    # a single keyword does not name the salient pixels its CAM does not reach (our rule would)
    single = wsss_bed_labels(salient, ["dog"], _cams()[1:], cam_threshold=0.1)
    expected_single = np.where(salient, IGNORE_INDEX, 0).astype(np.uint8)
    expected_single[5:15, 22:30] = DOG
    np.testing.assert_array_equal(single, expected_single)
    # a CAM on non-salient pixels never names them
    assert (labels[~salient] == 0).all() and _cams()[0][~salient].max() == 1.0


def test_checkpoint_free_run_labels_skips_and_reuses(tmp_path: Path) -> None:
    images, maps = _dataset(tmp_path)
    out = tmp_path / "out"
    assert wsss_main(_args(images, maps, out, "--cue", "saliency")) == 0
    summary = _summary(out)
    assert (summary["written"], summary["skipped"], summary["checkpoint"]) == (2, 2, None)
    np.testing.assert_array_equal(_label(out, "train/a/one.png"), _expected_split(["cat"]))
    np.testing.assert_array_equal(_label(out, "train/a/two.png"), _expected_split(["cat", "dog"]))
    records = read_manifests(out)
    assert "missing" in records["train/b/three.png"]["skipped"]
    assert "20" in records["train/b/four.png"]["skipped"] and "41x20" in records["train/b/four.png"]["skipped"]
    assert not (out / "labels" / "train" / "b").exists()
    one = records["train/a/one.png"]
    assert one["saliency_map"] == "train/a/one.png" and len(one["saliency_sha256"]) == 64

    # a rerun reuses both labels; a changed map (same size) is redone, the other is not
    assert wsss_main(_args(images, maps, out, "--cue", "saliency")) == 0
    assert (_summary(out)["reused"], _summary(out)["written"]) == (2, 0)
    changed = _map_two_objects()
    changed[5:15, 22:38] = 0  # the right object is gone
    Image.fromarray(changed).save(maps / "train/a/one.png")
    assert wsss_main(_args(images, maps, out, "--cue", "saliency")) == 0
    assert (_summary(out)["reused"], _summary(out)["written"]) == (1, 1)
    assert (_label(out, "train/a/one.png")[5:15, 22:38] == 0).all()

    # another threshold is another fingerprint: everything is redone, and the right object (60) drops out
    assert wsss_main(_args(images, maps, out, "--cue", "saliency", "--saliency-threshold", "0.3")) == 0
    assert (_summary(out)["reused"], _summary(out)["written"]) == (0, 2)
    np.testing.assert_array_equal(_label(out, "train/a/two.png"),
                                  _expected_split(["cat", "dog"], threshold_level=77))


class _FixedCam:
    """Stands in for a CamNet (as load_cam returns it): fixed CAMs per keyword, whatever the image."""

    calls = 0

    def keyword_maps(self, image: np.ndarray, keywords) -> np.ndarray:
        _FixedCam.calls += 1
        assert image.shape == (H, W, 3)
        return _cams()[[["cat", "dog"].index(k) for k in keywords]]


def test_cam_saliency_from_maps_by_both_fusion_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pipeline.proxy_labels.runner.load_cam", lambda path, map_location: (_FixedCam(), {}))
    images, maps = _dataset(tmp_path)
    cam = tmp_path / "cam.pt"
    cam.write_bytes(b"a stand-in: load_cam is patched")
    base = ["--cue", "cam_saliency", "--cam", str(cam), "--cam-threshold", "0.1"]
    split = tmp_path / "split"
    _FixedCam.calls = 0
    assert wsss_main(_args(images, maps, split, *base)) == 0
    assert _FixedCam.calls == 1  # the multi-keyword image only
    np.testing.assert_array_equal(_label(split, "train/a/one.png"), _expected_split(["cat"]))
    expected_two = _expected_split(["cat", "dog"])
    expected_two[5:15, 2:18] = CAT
    expected_two[5:15, 22:30] = DOG
    np.testing.assert_array_equal(_label(split, "train/a/two.png"), expected_two)

    bed = tmp_path / "bed"
    assert wsss_main(_args(images, maps, bed, *base, "--fusion", "wsss_bed")) == 0
    assert _summary(bed)["settings"] != _summary(split)["settings"]
    np.testing.assert_array_equal(_label(bed, "train/a/two.png"), expected_two)  # the same rule for two keywords
    expected_one = np.where(_map_two_objects() >= 51, IGNORE_INDEX, 0).astype(np.uint8)
    expected_one[5:15, 2:18] = CAT  # the cat CAM covers only the left half: the right object stays ignore
    np.testing.assert_array_equal(_label(bed, "train/a/one.png"), expected_one)

    # the CRF runs on the map's probabilities; ignore stays ignore
    crf = tmp_path / "crf"
    assert wsss_main(_args(images, maps, crf, *base, "--crf", "--workers", "2")) == 0
    refined = _label(crf, "train/a/two.png")
    assert (refined[expected_two == IGNORE_INDEX] == IGNORE_INDEX).all()
    assert set(np.unique(refined).tolist()) <= {0, CAT, DOG, IGNORE_INDEX}
    assert _summary(crf)["written"] == 2


def test_saliency_cue_in_worker_processes_matches_one_process(tmp_path: Path) -> None:
    images, maps = _dataset(tmp_path)
    assert wsss_main(_args(images, maps, tmp_path / "one", "--cue", "saliency", "--workers", "1")) == 0
    assert wsss_main(_args(images, maps, tmp_path / "two", "--cue", "saliency", "--workers", "2")) == 0
    for name in ("train/a/one.png", "train/a/two.png"):
        np.testing.assert_array_equal(_label(tmp_path / "one", name), _label(tmp_path / "two", name))
    assert _summary(tmp_path / "two")["skipped"] == 2


def test_options_that_cannot_apply_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    images, maps = _dataset(tmp_path)
    out = tmp_path / "out"
    assert wsss_main(_args(images, maps, out, "--cue", "instances")) == 2
    assert "--saliency-maps" in capsys.readouterr().err
    assert wsss_main(_args(images, maps, out, "--cue", "saliency", "--fusion", "wsss_bed")) == 2
    assert "cam_saliency" in capsys.readouterr().err
    no_maps = ["proxy-labels", "--images", str(images), "--out", str(out), "--cue", "saliency", "-q"]
    assert wsss_main(no_maps) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert wsss_main([*no_maps, "--checkpoint", str(tmp_path / "x.pt"), "--saliency-threshold", "0.3"]) == 2
    assert "--saliency-threshold" in capsys.readouterr().err
    assert wsss_main(_args(images, tmp_path / "nowhere", out, "--cue", "saliency")) == 2
    assert "nowhere" in capsys.readouterr().err
    assert not out.exists()


def test_fingerprint_names_the_saliency_source_and_keeps_old_labels_valid() -> None:
    settings = ProxyLabelSettings(cue="saliency")
    before = settings.fingerprint("c", None)  # S4Net's instances by our rule: as before outside maps existed
    assert settings.fingerprint("c", None, saliency=SaliencyConfig()) == before
    assert settings.fingerprint("c", None, saliency=SaliencyConfig(threshold=0.5)) == before  # unused there
    maps = settings.fingerprint(None, None, saliency=SaliencyConfig(maps="/a"))
    assert maps != settings.fingerprint(None, None)
    # the folder's name is not the content: each map's sha256 is checked per image
    assert maps == settings.fingerprint(None, None, saliency=SaliencyConfig(maps="/b"))
    assert maps != settings.fingerprint(None, None, saliency=SaliencyConfig(maps="/a", threshold=0.3))
    cam = ProxyLabelSettings(cue="cam_saliency")
    assert cam.fingerprint("c", "k", saliency=SaliencyConfig(fusion="wsss_bed")) != cam.fingerprint("c", "k")
    with pytest.raises(ValueError, match="--saliency-maps"):
        make_cue("instances", AssignmentConfig(), ProxyConfig(), saliency=SaliencyConfig(maps="/a"))


def test_map_formats(tmp_path: Path) -> None:
    sixteen = (np.arange(H * W, dtype=np.uint16).reshape(H, W) * 80)
    Image.fromarray(sixteen).save(tmp_path / "wide.png")
    saliency, sha = read_saliency_map(tmp_path / "wide.png", (W, H))
    np.testing.assert_allclose(saliency, sixteen / 65535.0, atol=1e-6)
    assert len(sha) == 64
    grey = _map_two_objects()
    Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2)).save(tmp_path / "rgb.png")
    np.testing.assert_allclose(read_saliency_map(tmp_path / "rgb.png")[0], grey / 255.0, atol=1e-6)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(Exception, match="broken.png"):
        read_saliency_map(tmp_path / "broken.png")
    Image.fromarray(np.zeros((4, 4), dtype=np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(Exception, match="float.tiff.*unsupported mode F"):
        read_saliency_map(tmp_path / "float.tiff")


def test_saliency_from_masks_round_trip(tmp_path: Path) -> None:
    images, _ = _dataset(tmp_path)
    masks = tmp_path / "masks"
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[5:15, 2:18] = CAT
    mask[4, 2:18] = IGNORE_INDEX  # a void outline
    for name in ("train/a/one.png", "train/b/three.png"):
        (masks / name).parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(mask, mode="P")
        image.putpalette([0, 0, 0] * 256)
        image.save(masks / name)
    oracle = tmp_path / "oracle"
    assert wsss_main(["saliency-from-masks", "--masks", str(masks), "--out", str(oracle), "-q"]) == 0
    written = np.asarray(Image.open(oracle / "train/b/three.png"))
    np.testing.assert_array_equal(written, np.where(mask == 0, 0, 255))
    assert not list(oracle.rglob("*.tmp*"))
    out = tmp_path / "out"
    assert wsss_main(_args(images, oracle, out, "--cue", "saliency")) == 0
    three = _label(out, "train/b/three.png")
    assert (three[mask == CAT] == DOG).all() and (three[mask == 0] == 0).all()  # its keyword is dog
    assert (_summary(out)["written"], _summary(out)["skipped"]) == (2, 2)  # two.png and four.png have no map


def test_wsss_bed_fusion_on_s4net_instances_cuts_their_union() -> None:
    from s4net.inference import Detections

    masks = np.zeros((2, H, W), dtype=np.float32)
    masks[0, 5:15, 2:18] = 0.9
    masks[1, 5:15, 22:38] = 0.3  # above the saliency threshold (0.2), under --foreground (0.5)
    detections = Detections(key="x", image=np.zeros((H, W, 3), np.uint8), boxes=np.zeros((2, 4), np.float32),
                            scores=np.full(2, 0.9, np.float32), masks=masks)
    cue = make_cue("cam_saliency", AssignmentConfig(min_area=0.0), ProxyConfig(border=0, cam_threshold=0.1),
                   cam=_FixedCam(), saliency=SaliencyConfig(fusion="wsss_bed"))
    result = cue(detections, ["cat", "dog"])
    expected = np.zeros((H, W), dtype=np.uint8)
    expected[5:15, 2:18] = CAT
    expected[5:15, 22:30] = DOG
    expected[5:15, 30:38] = IGNORE_INDEX
    np.testing.assert_array_equal(result.labels, expected)
    assert result.record["kept"] == 2 and len(result.record["instances"]) == 2
    assert result.label_ids == [0, CAT, DOG] and result.probabilities.shape == (3, H, W)
