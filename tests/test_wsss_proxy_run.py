"""``wsss proxy-labels`` end to end on the tiny world: resume after a kill, shards, bad images, real photos."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import LOOSE_CUES, proxy_label_args

from pipeline.classes import IGNORE_INDEX, NUM_CLASSES
from pipeline.cli import main as wsss_main
from pipeline.datasets.imagenet import KeywordEntry, load_wnid_map, write_keyword_table
from pipeline.datasets.voc import read_voc_label
from pipeline.proxy_labels.manifest import read_manifests

LOOSE = LOOSE_CUES


def _checksums(out: Path) -> dict[str, str]:
    return {image: r["sha256"] for image, r in read_manifests(out).items() if not r.get("skipped")}


def _run(checkpoint: Path, world: Path, out: Path, *extra: str) -> int:
    return wsss_main(proxy_label_args(checkpoint, world, out, *extra))


def test_labels_are_valid_and_shards_add_up_to_the_whole_run(checkpoint: Path, tiny_world: Path,
                                                             tmp_path: Path) -> None:
    assert _run(checkpoint, tiny_world, tmp_path / "whole") == 0
    whole = _checksums(tmp_path / "whole")
    keywords = (tiny_world / "imagenet" / "keywords.csv").read_text().splitlines()[1:]
    assert len(whole) == len(keywords) == 40
    assert any(" " in line.split(",")[1] for line in keywords)  # multi-keyword images are exercised
    assert (tmp_path / "whole" / "instance_classifier.pt").is_file()
    values = set()
    for record in read_manifests(tmp_path / "whole").values():
        labels = read_voc_label(tmp_path / "whole" / "labels" / record["label"])
        assert labels.shape == tuple(record["size"][::-1])
        values |= set(np.unique(labels).tolist())
        assert sum(record["class_pixels"].values()) == labels.size
    assert values <= set(range(NUM_CLASSES)) | {IGNORE_INDEX} and len(values - {0, IGNORE_INDEX}) >= 3
    classifier = ["--classifier", str(tmp_path / "whole" / "instance_classifier.pt")]
    for index in range(3):
        assert _run(checkpoint, tiny_world, tmp_path / "shards", "--shard", f"{index}/3", *classifier) == 0
    assert sorted(p.name for p in (tmp_path / "shards").glob("manifest*")) == [
        f"manifest.shard-{i}-of-3.jsonl" for i in range(3)]
    assert _checksums(tmp_path / "shards") == whole
    # a rerun finds everything done
    assert _run(checkpoint, tiny_world, tmp_path / "whole") == 0
    summary = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert summary["written"] == 0 and summary["reused"] == 40
    # other settings are not mistaken for done work
    assert _run(checkpoint, tiny_world, tmp_path / "whole", "--border", "2") == 0
    assert json.loads((tmp_path / "whole" / "summary.json").read_text())["written"] == 40


def test_a_killed_run_resumes_to_the_same_labels(checkpoint: Path, tiny_world: Path, tmp_path: Path) -> None:
    assert _run(checkpoint, tiny_world, tmp_path / "reference", "--cue", "saliency", "--crf") == 0
    out = tmp_path / "killed"
    args = proxy_label_args(checkpoint, tiny_world, out, "--cue", "saliency", "--crf", batch_size=1)
    code = f"import sys; from pipeline.cli import main; sys.exit(main({args!r}))"
    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    manifest = out / "manifest.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if manifest.exists() and len(manifest.read_text().splitlines()) >= 5:
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait()
    partial = len(_checksums(out))
    assert 5 <= partial < 40, "the run was not killed midway"
    assert _run(checkpoint, tiny_world, out, "--cue", "saliency", "--crf") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reused"] >= 5 and summary["written"] == 40 - summary["reused"]
    assert _checksums(out) == _checksums(tmp_path / "reference")
    assert not list(out.rglob(".tmp-*"))


def test_bad_images_are_skipped_and_listed(checkpoint: Path, tiny_world: Path, tmp_path: Path) -> None:
    root = tmp_path / "images"
    (root / "train" / "n01530575").mkdir(parents=True)
    good = next((tiny_world / "imagenet" / "train").rglob("*.JPEG"))
    (root / "train" / "n01530575" / "a.JPEG").write_bytes(good.read_bytes())
    (root / "train" / "n01530575" / "b.JPEG").write_bytes(b"not a jpeg")
    write_keyword_table(root / "keywords.csv", [KeywordEntry("train/n01530575/a.JPEG", ("bird",)),
                                               KeywordEntry("train/n01530575/b.JPEG", ("bird",))])
    code = wsss_main(["proxy-labels", "--checkpoint", str(checkpoint), "--images", str(root), "--keywords",
                      str(root / "keywords.csv"), "--out", str(tmp_path / "out"), "-q"])
    assert code == 0
    records = read_manifests(tmp_path / "out")
    assert records["train/n01530575/b.JPEG"]["skipped"] and "sha256" in records["train/n01530575/a.JPEG"]
    assert wsss_main(["proxy-labels", "--checkpoint", str(checkpoint), "--images", str(root), "--out",
                      str(tmp_path / "x"), "--shard", "3/2"]) == 2
    with pytest.raises(SystemExit) as stop:  # argparse: a one-line usage error
        wsss_main(["proxy-labels", "--checkpoint", str(checkpoint), "--images", str(root), "--out",
                   str(tmp_path / "y"), "--batch-size", "0"])
    assert stop.value.code == 2
    assert wsss_main(["proxy-labels", "--checkpoint", str(tmp_path / "missing.pt"), "--images", str(root), "--out",
                      str(tmp_path / "z")]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()  # nothing written for bad input


def test_real_imagenet_photos_get_valid_labels(checkpoint: Path, realdata: Path, tmp_path: Path) -> None:
    source = realdata / "imagenet_voc_classes"
    wnids = load_wnid_map()
    rows = [line.split(",") for line in (source / "labels.csv").read_text().splitlines()[1:]]
    entries = [KeywordEntry(name, (wnids[wnid],)) for name, wnid, *_ in rows]
    write_keyword_table(tmp_path / "keywords.csv", entries)
    code = wsss_main(["proxy-labels", "--checkpoint", str(checkpoint), "--images", str(source), "--keywords",
                      str(tmp_path / "keywords.csv"), "--out", str(tmp_path / "out"), "-q", *LOOSE])
    assert code == 0
    records = read_manifests(tmp_path / "out")
    assert len(records) == len(entries) and not any(r.get("skipped") for r in records.values())
    for entry in entries:
        record = records[entry.image]
        labels = read_voc_label(tmp_path / "out" / "labels" / record["label"])
        assert labels.shape == tuple(record["size"][::-1])
        from pipeline.classes import CLASS_INDEX

        assert set(np.unique(labels).tolist()) <= {0, CLASS_INDEX[entry.keywords[0]], IGNORE_INDEX}
