"""Disk full and read-only output, simulated at the file writer: a clear stop, nothing corrupt, a clean rerun.

The writes of every output go through ``s4net.io.atomic.atomic_path``; the tests make it fail
with ENOSPC (after some files were written) or EROFS, as a full or read-only volume would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import proxy_label_args

from pipeline.proxy_labels.manifest import is_done, read_manifests

BIN = Path(sys.executable).parent

# Runs `wsss` with the atomic writer's final rename failing from its N-th file on (N < 0: all of them), as a full
# or read-only volume fails a write, then exits with wsss's status. Every output goes through that rename.
FAULTY_WRITER = """
import errno, os, sys

failing_from, code = int(sys.argv[1]), sys.argv[2]
real_replace = os.replace
count = [0]

def faulty_replace(source, target, *args, **kwargs):
    count[0] += 1
    if failing_from < 0 or count[0] >= failing_from:
        number = getattr(errno, code)
        raise OSError(number, os.strerror(number), str(target))
    return real_replace(source, target, *args, **kwargs)

os.replace = faulty_replace
from pipeline.cli import main
sys.exit(main(sys.argv[3:]))
"""


def faulty_run(failing_from: int, code: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", FAULTY_WRITER, str(failing_from), code, *args],
                          capture_output=True, text=True)


def assert_nothing_corrupt(out: Path) -> None:
    """Every label the manifest vouches for is whole (its checksum holds); no temporary file is left."""
    for record in read_manifests(out).values():
        if not record.get("skipped"):
            assert is_done(record, out, record["settings"]), record["image"]
    assert not list(out.rglob(".tmp-*"))


@pytest.mark.parametrize("code, words", [("ENOSPC", "No space left on device"),
                                         pytest.param("EROFS", "Read-only file system", marks=pytest.mark.slow)])
def test_proxy_labels_stop_cleanly_when_the_disk_fails_and_a_rerun_completes(
        checkpoint: Path, tiny_world: Path, tmp_path: Path, code: str, words: str) -> None:
    out = tmp_path / "out"
    result = faulty_run(12, code, proxy_label_args(checkpoint, tiny_world, out))
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and str(out) in lines[0], result.stderr
    done = read_manifests(out) if out.exists() else {}
    assert 0 < len(done) < 40
    assert_nothing_corrupt(out)
    # space freed
    assert subprocess.run([str(BIN / "wsss"), *proxy_label_args(checkpoint, tiny_world, out)]).returncode == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reused"] == len(done) and summary["reused"] + summary["written"] == 40
    assert_nothing_corrupt(out)


@pytest.mark.slow  # every trainer's full disk runs in process by default (test_every_trainer.py); this is the CLI's
def test_segmenter_training_on_a_full_disk_keeps_its_last_checkpoint(tiny_world: Path, tmp_path: Path) -> None:
    imagenet = tiny_world / "imagenet"
    args = ["train-segmenter", "--images", str(imagenet), "--labels", str(imagenet / "masks"), "--out",
            str(tmp_path / "seg"), "--encoder", "resnet18", "--iterations", "6", "--batch-size", "2", "--crop", "48",
            "--checkpoint-every", "2", "--seed", "1", "--device", "cpu", "-q"]
    # writes: train_config.json, last.pt at 2, then the disk is full at the checkpoint of iteration 4
    result = faulty_run(3, "ENOSPC", args)
    assert result.returncode == 1 and "No space left on device" in result.stderr, result.stderr[-2000:]
    from pipeline.segmenter.model import read_segmenter

    assert read_segmenter(tmp_path / "seg" / "checkpoints" / "last.pt")["iteration"] == 2
    assert not (tmp_path / "seg" / "model_final.pt").exists()
    assert subprocess.run([str(BIN / "wsss"), *args]).returncode == 0
    assert read_segmenter(tmp_path / "seg" / "model_final.pt")["iteration"] == 6


def test_every_writer_goes_through_the_atomic_path() -> None:
    """No output is written around atomic_path (whose final rename the tests above make fail)."""
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for path in [*(root / "pipeline").rglob("*.py"), *(root / "s4net").rglob("*.py")]:
        text = path.read_text()
        for needle in (".write_bytes(", ".write_text(", "torch.save(path", "np.save("):
            if needle in text and path.name != "atomic.py":
                offenders.append(f"{path.name}: {needle}")
    assert not offenders, offenders
