"""A corpus of broken and odd images through one ``wsss proxy-labels`` run.

Each file gets its documented behaviour: odd but valid formats are converted and labelled,
broken ones are skipped and listed with a reason naming the problem; the good images' labels
are byte-identical to those of a run without the bad company.
"""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import threading
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from helpers import LOOSE_CUES
from PIL import Image

from pipeline.cli import main as wsss_main
from pipeline.datasets.voc import read_voc_label
from pipeline.proxy_labels.manifest import read_manifests
from s4net.cli.commands import main as s4net_main

WNID = "n02085620"  # Chihuahua -> dog in the shipped map


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` and whose data is a few bytes (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + chunk(b"IEND", b""))


def encoded(image: Image.Image, kind: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind, **options)
    return buffer.getvalue()


def build_corpus(good: list[Path], folder: Path) -> tuple[dict[str, str], list[str]]:
    """Write the corpus; returns {file name: expected skip-reason fragment} and the names that must be labelled."""
    folder.mkdir(parents=True)
    rgb = np.asarray(Image.open(good[0]).convert("RGB"))
    picture = Image.fromarray(rgb)
    jpeg = good[0].read_bytes()
    files = {
        "zero.JPEG": b"",
        "truncated.JPEG": jpeg[: len(jpeg) // 3],
        "corrupt.JPEG": bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)),
        "bomb.png": png_header_only(20000, 20000),
        "png_inside.JPEG": encoded(picture, "PNG"),
        "gray.JPEG": encoded(picture.convert("L"), "JPEG"),
        "cmyk.JPEG": encoded(picture.convert("CMYK"), "JPEG"),
        "rgba.png": encoded(picture.convert("RGBA"), "PNG"),
        "palette.png": encoded(picture.convert("P"), "PNG"),
        "sixteen.png": encoded(Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)), "PNG"),
        "one_pixel.png": encoded(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
        ("x" * 240) + ".JPEG": jpeg,
    }
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    files["exif_rotated.JPEG"] = encoded(picture, "JPEG", exif=exif.tobytes())
    for name, data in files.items():
        (folder / name).write_bytes(data)
    os.symlink(folder / "loop_b.JPEG", folder / "loop_a.JPEG")
    os.symlink(folder / "loop_a.JPEG", folder / "loop_b.JPEG")
    os.symlink(folder / "nowhere.JPEG", folder / "dangling.JPEG")
    skipped = {"zero.JPEG": "empty", "truncated.JPEG": "", "corrupt.JPEG": "", "bomb.png": "decompression bomb",
               "loop_a.JPEG": "", "loop_b.JPEG": "", "dangling.JPEG": ""}
    labelled = ["png_inside.JPEG", "gray.JPEG", "cmyk.JPEG", "rgba.png", "palette.png", "sixteen.png",
                "one_pixel.png", ("x" * 240) + ".JPEG", "exif_rotated.JPEG"]
    return skipped, labelled


def run_labels(checkpoint: Path, images: Path, out: Path) -> int:
    return wsss_main(["proxy-labels", "--checkpoint", str(checkpoint), "--images", str(images), "--out", str(out),
                      "-q", *LOOSE_CUES])


def test_a_corpus_of_bad_images_is_skipped_listed_or_converted(checkpoint: Path, tiny_world: Path,
                                                               tmp_path: Path) -> None:
    good = sorted((tiny_world / "imagenet" / "train").rglob("*.JPEG"))[:3]
    clean = tmp_path / "clean" / "train" / WNID
    clean.mkdir(parents=True)
    for path in good:
        (clean / path.name).write_bytes(path.read_bytes())
    assert run_labels(checkpoint, tmp_path / "clean", tmp_path / "clean_out") == 0
    reference = {r["image"]: r["sha256"] for r in read_manifests(tmp_path / "clean_out").values()}

    mixed = tmp_path / "mixed"
    skipped, labelled = build_corpus(good, mixed / "train" / WNID)
    for path in good:
        (mixed / "train" / WNID / path.name).write_bytes(path.read_bytes())
    assert run_labels(checkpoint, mixed, tmp_path / "out") == 0
    records = {Path(r["image"]).name: r for r in read_manifests(tmp_path / "out").values()}
    for name, reason in skipped.items():
        assert records[name].get("skipped"), name
        assert reason in records[name]["skipped"], (name, records[name]["skipped"])
    for name in labelled:
        record = records[name]
        assert not record.get("skipped"), (name, record.get("skipped"))
        labels = read_voc_label(tmp_path / "out" / "labels" / record["label"])
        assert labels.shape == tuple(record["size"][::-1]), name
    assert tuple(records["exif_rotated.JPEG"]["size"]) == tuple(records[good[0].name]["size"][::-1])  # turned upright
    for image, checksum in reference.items():
        assert records[Path(image).name]["sha256"] == checksum  # the good images are untouched by their neighbours


def test_an_unreadable_image_is_skipped_with_its_reason(checkpoint: Path, tiny_world: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "images" / "train" / WNID
    folder.mkdir(parents=True)
    good = sorted((tiny_world / "imagenet" / "train").rglob("*.JPEG"))[0]
    (folder / "locked.JPEG").write_bytes(good.read_bytes())
    (folder / "locked.JPEG").chmod(0)
    (folder / "open.JPEG").write_bytes(good.read_bytes())
    if os.geteuid() == 0:  # root reads whatever the mode says: refuse the file the way the kernel would
        real_open = Image.open

        def refusing_open(path, *args, **kwargs):
            if Path(path).name == "locked.JPEG":
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(Image, "open", refusing_open)
    assert run_labels(checkpoint, tmp_path / "images", tmp_path / "out") == 0
    records = {Path(r["image"]).name: r for r in read_manifests(tmp_path / "out").values()}
    assert records["locked.JPEG"]["skipped"] == "permission denied" and not records["open.JPEG"].get("skipped")


def test_a_file_name_that_is_not_utf8_is_labelled_under_the_same_bytes(checkpoint: Path, tiny_world: Path,
                                                                        tmp_path: Path) -> None:
    folder = tmp_path / "images" / "train" / WNID
    folder.mkdir(parents=True)
    good = sorted((tiny_world / "imagenet" / "train").rglob("*.JPEG"))[0]
    (folder / "fine.JPEG").write_bytes(good.read_bytes())
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.JPEG"), "wb") as handle:  # Latin-1, not UTF-8
        handle.write(good.read_bytes())
    assert run_labels(checkpoint, tmp_path / "images", tmp_path / "out") == 0
    records = read_manifests(tmp_path / "out")
    assert len(records) == 2 and not any(r.get("skipped") for r in records.values())
    labels = os.listdir(os.fsencode(tmp_path / "out" / "labels" / "train" / WNID))
    assert sorted(labels) == [b"caf\xe9.png", b"fine.png"]
    assert run_labels(checkpoint, tmp_path / "images", tmp_path / "out") == 0  # the manifest finds it again
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["reused"] == 2


SPECIAL_FILES = {"fifo.JPEG": "named pipe", "socket.JPEG": "socket", "folder.JPEG": "directory",
                 "device.JPEG": "character device"}


def make_special_files(folder: Path, monkeypatch: pytest.MonkeyPatch) -> socket.socket:
    """A FIFO, a bound Unix socket, a directory and a link to a character device, all named like images.

    Returns the socket (keep it open while the files are read).
    """
    os.mkfifo(folder / "fifo.JPEG")
    (folder / "folder.JPEG").mkdir()
    os.symlink("/dev/null", folder / "device.JPEG")
    monkeypatch.chdir(folder)  # a relative address: tmp paths can exceed AF_UNIX's 108 bytes
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("socket.JPEG")
    return server


def run_unblocking(work: Callable[[], None], fifo: Path, timeout: float) -> bool:
    """Run ``work`` in a thread; past ``timeout``, feed EOF to whoever waits on ``fifo`` until it ends.

    Returns whether it ended in time (the code before this fix blocked forever in ``open()`` of the pipe;
    the EOF lets such a run end, so the test fails instead of hanging).
    """
    errors: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    in_time = not thread.is_alive()
    while thread.is_alive():
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # a waiting reader wakes up to end-of-file
        except OSError:
            pass  # no reader waiting at this instant
        thread.join(0.1)
    if errors:
        raise errors[0]
    return in_time


def test_pipes_sockets_folders_and_devices_named_like_images_are_skipped_unopened(
        checkpoint: Path, tiny_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "images" / "train" / WNID
    folder.mkdir(parents=True)
    good = sorted((tiny_world / "imagenet" / "train").rglob("*.JPEG"))[0]
    (folder / "good.JPEG").write_bytes(good.read_bytes())
    server = make_special_files(folder, monkeypatch)
    proxy_out, predict_out = tmp_path / "proxy", tmp_path / "predict"
    codes: list[int] = []

    def work() -> None:
        codes.append(run_labels(checkpoint, tmp_path / "images", proxy_out))
        codes.append(s4net_main(["predict", "--checkpoint", str(checkpoint), "--images", str(folder),
                                 str(folder / "fifo.JPEG"), "--out", str(predict_out), "--device", "cpu", "-q"]))

    try:
        assert run_unblocking(work, folder / "fifo.JPEG", timeout=60), "a named pipe among the images hung the run"
    finally:
        server.close()
    assert codes == [0, 0]
    records = {Path(r["image"]).name: r for r in read_manifests(proxy_out).values()}
    assert "sha256" in records["good.JPEG"]
    for name, kind in SPECIAL_FILES.items():
        assert kind in records[name].get("skipped", ""), (name, records[name])
    assert json.loads((proxy_out / "summary.json").read_text())["skipped"] == len(SPECIAL_FILES)
    listed = json.loads((predict_out / "skipped.json").read_text())
    skipped = {Path(item["image"]).name: item["reason"] for item in listed}
    assert sorted(skipped) == sorted(SPECIAL_FILES) and all(k in skipped[n] for n, k in SPECIAL_FILES.items())
    assert len(json.loads((predict_out / "images.json").read_text())["images"]) == 1
