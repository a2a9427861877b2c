"""``wsss proxy-labels`` at speed: pooled cue/CRF/writing, S4Net's minimum score, packed masks, CRF knobs, devices."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

import pipeline.proxy_labels.runner as runner
from pipeline.cli import main as wsss_main
from pipeline.cues.crf import CRFConfig
from pipeline.cues.keyword_assignment import AssignmentConfig
from pipeline.datasets.imagenet import read_keyword_table, write_keyword_table
from pipeline.proxy_labels.manifest import read_manifests
from pipeline.proxy_labels.runner import ProxyLabelSettings
from s4net.inference import PackedMasks

# the random-weight fixture scores every proposal about 0.0101-0.0107: this threshold keeps some, drops others
THRESHOLD = "0.0102"


def _labels(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted((out / "labels").rglob("*.png"))}


def quick_classifier(checkpoint: Path, path: Path) -> Path:
    """An instance classifier for the checkpoint's features trained for two steps on random ones (fitting a real
    one takes most of a run's time)."""
    from pipeline.cues.instance_classifier import ClassifierConfig, save_classifier, train_classifier
    from s4net.checkpoint import load_checkpoint

    dim = sum(load_checkpoint(checkpoint).backbone.out_channels[1:])  # c3..c5, as s4net.inference.FEATURE_LEVELS
    rng = np.random.default_rng(0)
    classifier, report = train_classifier(rng.random((40, dim), dtype=np.float32), np.arange(40) % 20,
                                          ClassifierConfig(hidden=16, epochs=2, holdout=0))
    save_classifier(path, classifier, report)
    return path


def test_pooled_min_score_run_writes_the_serial_full_branch_labels(checkpoint: Path, tiny_world: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    imagenet = tiny_world / "imagenet"
    entries = read_keyword_table(imagenet / "keywords.csv")[:10]
    assert sum(len(e.keywords) > 1 for e in entries) >= 3  # the instance classifier runs, in the workers too
    write_keyword_table(tmp_path / "keywords.csv", entries)
    classifier = quick_classifier(checkpoint, tmp_path / "classifier.pt")
    branch_min_scores: list[float] = []
    real_run_detector = runner.run_detector

    def spying_run_detector(model, *args, **kwargs):
        branch_min_scores.append(model.min_score)
        return real_run_detector(model, *args, **kwargs)

    monkeypatch.setattr(runner, "run_detector", spying_run_detector)

    def run(out: Path, *extra: str) -> dict:
        assert wsss_main(["proxy-labels", "--checkpoint", str(checkpoint), "--images", str(imagenet), "--keywords",
                          str(tmp_path / "keywords.csv"), "--out", str(out), "--batch-size", "5", "-q",
                          "--score-threshold", THRESHOLD, "--min-area", "0", "--foreground", "0.5",
                          "--background", "0.45", "--crf", "--crf-iterations", "3", "--classifier", str(classifier),
                          *extra]) == 0
        return json.loads((out / "summary.json").read_text())

    serial = run(tmp_path / "serial", "--workers", "1", "--min-score", "0")
    pooled = run(tmp_path / "pooled", "--workers", "2")
    assert branch_min_scores == [0.0, float(THRESHOLD)]  # the default is the cue's own threshold
    assert serial["written"] == pooled["written"] == len(entries) and pooled["min_score"] == float(THRESHOLD)
    assert serial["device"] == pooled["device"] == ("cuda" if torch.cuda.is_available() else "cpu")  # --device auto
    records = read_manifests(tmp_path / "serial")
    kept = sum(r["kept"] for r in records.values())
    low = sum(i["status"] == "low score" for r in records.values() for i in r["instances"])
    assert kept > 0 and low == 0  # some instances pass the threshold (and low scorers are not listed)
    assert _labels(tmp_path / "serial") == _labels(tmp_path / "pooled")
    assert records == read_manifests(tmp_path / "pooled")  # same records, fingerprints included


def test_packed_masks_round_trip_bit_for_bit() -> None:
    generator = torch.Generator().manual_seed(0)
    masks = torch.zeros(5, 37, 53)
    masks[0, 4:20, 9:30] = torch.rand(16, 21, generator=generator)
    masks[0, 10, 12] = 0.0  # a zero inside a window stays zero
    masks[1] = torch.rand(37, 53, generator=generator)  # the whole image
    masks[3, 36, 52] = 1e-30  # one pixel in the last corner
    masks[4, 0, 0] = 0.75  # one pixel in the first corner
    packed = PackedMasks.pack(masks)
    assert np.array_equal(packed.unpack(), masks.numpy())
    assert packed.windows.tolist() == [[4, 20, 9, 30], [0, 37, 0, 53], [0, 0, 0, 0], [36, 37, 52, 53], [0, 1, 0, 1]]
    assert packed.nbytes < masks.numpy().nbytes / 2
    empty = PackedMasks.pack(torch.zeros(0, 7, 9))
    assert empty.unpack().shape == (0, 7, 9)


def test_fingerprint_holds_knobs_only_where_they_change_labels() -> None:
    def legacy(settings: ProxyLabelSettings) -> str:  # the fingerprint before min_score and CRF scale existed
        fields = asdict(settings)
        del fields["min_score"]
        if fields["crf"] is not None:
            del fields["crf"]["scale"]
        text = json.dumps({"settings": fields, "checkpoint": "c", "classifier": None}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    for crf in (None, CRFConfig()):
        plain = ProxyLabelSettings(crf=crf)
        assert plain.fingerprint("c", None) == legacy(plain)  # labels made before still count as done
        assert ProxyLabelSettings(crf=crf, min_score=0.1).fingerprint("c", None) == plain.fingerprint("c", None)
        assert ProxyLabelSettings(crf=crf, min_score=0.7).fingerprint("c", None) != plain.fingerprint("c", None)
    full = ProxyLabelSettings(crf=CRFConfig()).fingerprint("c", None)
    assert ProxyLabelSettings(crf=CRFConfig(scale=0.5)).fingerprint("c", None) != full
    assert ProxyLabelSettings(crf=CRFConfig(iterations=5)).fingerprint("c", None) != full
    assert ProxyLabelSettings(assignment=AssignmentConfig(score_threshold=1.0)).branch_min_score < 1.0
    with pytest.raises(ValueError, match="min_score"):
        ProxyLabelSettings(min_score=1.0)


def test_the_pool_is_one_process_on_cpu_and_most_cores_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    assert runner.proxy_workers(None, "cpu") == 1 and runner.proxy_workers(3, "cpu") == 3
    for cores, expected in ((16, 14), (64, 16), (2, 1)):
        monkeypatch.setattr(runner.os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)), raising=False)
        assert runner.proxy_workers(None, torch.device("cuda", 0)) == expected
    with pytest.raises(ValueError, match="workers"):
        runner.proxy_workers(0, "cpu")
