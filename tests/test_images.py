"""Image and label reading: mode conversions, EXIF, and one-line errors for bad files."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from s4net.errors import ImageReadError
from s4net.io import (
    atomic_path,
    load_instance_png,
    load_label_png,
    load_rgb,
    read_image_size,
    save_image,
    save_label_png,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (12, 20, 3), dtype=np.uint8)


def _assert_one_line(exc: pytest.ExceptionInfo, path: Path, words: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    assert str(path) in message
    assert words in message


def test_rgb_png_roundtrip(tmp_path: Path) -> None:
    save_image(tmp_path / "a.png", RGB)
    assert np.array_equal(load_rgb(tmp_path / "a.png"), RGB)


def test_grayscale_is_replicated(tmp_path: Path) -> None:
    gray = RGB[..., 0]
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    out = load_rgb(tmp_path / "g.png")
    assert out.shape == (12, 20, 3) and np.array_equal(out[..., 1], gray)


def test_sixteen_bit_scaled_not_clipped(tmp_path: Path) -> None:
    wide = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    Image.fromarray(wide).save(tmp_path / "w.png")
    assert Image.open(tmp_path / "w.png").mode.startswith("I")
    assert load_rgb(tmp_path / "w.png")[0, :, 0].tolist() == [0, 100, 255]


def test_cmyk_jpeg_converted(tmp_path: Path) -> None:
    Image.fromarray(RGB).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    out = load_rgb(tmp_path / "c.jpg")
    assert out.shape == (12, 20, 3)
    assert np.abs(out.astype(int) - RGB.astype(int)).mean() < 25


def test_rgba_and_palette_converted(tmp_path: Path) -> None:
    rgba = np.dstack([RGB, np.full((12, 20), 128, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    assert np.array_equal(load_rgb(tmp_path / "a.png"), RGB)
    Image.fromarray(RGB).quantize(16).save(tmp_path / "p.png")
    assert load_rgb(tmp_path / "p.png").shape == (12, 20, 3)


def test_exif_rotation_applied(tmp_path: Path) -> None:
    image = Image.fromarray(RGB)
    exif = image.getexif()
    exif[0x0112] = 6  # stored rotated; view rotated 90 degrees clockwise
    image.save(tmp_path / "r.jpg", exif=exif, quality=100, subsampling=0)
    out = load_rgb(tmp_path / "r.jpg")
    assert out.shape == (20, 12, 3)
    assert read_image_size(tmp_path / "r.jpg") == (12, 20)
    expected = np.rot90(RGB, k=-1)
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 6


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError) as exc:
        load_rgb(tmp_path / "none.jpg")
    _assert_one_line(exc, tmp_path / "none.jpg", "no such file")


def test_zero_byte_and_corrupt(tmp_path: Path) -> None:
    (tmp_path / "z.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError) as exc:
        load_rgb(tmp_path / "z.jpg")
    _assert_one_line(exc, tmp_path / "z.jpg", "empty file")
    (tmp_path / "c.png").write_bytes(b"not an image at all" * 10)
    with pytest.raises(ImageReadError) as exc:
        load_rgb(tmp_path / "c.png")
    _assert_one_line(exc, tmp_path / "c.png", "not a readable image")


def test_truncated_jpeg(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    (tmp_path / "t.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageReadError) as exc:
        load_rgb(tmp_path / "t.jpg")
    _assert_one_line(exc, tmp_path / "t.jpg", "truncated")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files without permission bits")
def test_unreadable_permissions(tmp_path: Path) -> None:
    save_image(tmp_path / "a.png", RGB)
    os.chmod(tmp_path / "a.png", 0)
    with pytest.raises(ImageReadError) as exc:
        load_rgb(tmp_path / "a.png")
    _assert_one_line(exc, tmp_path / "a.png", "permission denied")


def test_symlink_loop(tmp_path: Path) -> None:
    os.symlink(tmp_path / "b.jpg", tmp_path / "a.jpg")
    os.symlink(tmp_path / "a.jpg", tmp_path / "b.jpg")
    with pytest.raises(ImageReadError) as exc:
        load_rgb(tmp_path / "a.jpg")
    _assert_one_line(exc, tmp_path / "a.jpg", "link loop")


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + chunk(b"IEND", b""))


def test_decompression_bomb_refused_from_header(tmp_path: Path) -> None:
    (tmp_path / "bomb.png").write_bytes(_png_header_only(20000, 20000))
    with pytest.raises(ImageReadError) as exc:
        load_rgb(tmp_path / "bomb.png")
    _assert_one_line(exc, tmp_path / "bomb.png", "decompression bomb")
    (tmp_path / "big.png").write_bytes(_png_header_only(3000, 3000))
    with pytest.raises(ImageReadError, match="exceeds the limit"):
        load_rgb(tmp_path / "big.png", max_pixels=1_000_000)


def test_label_png_palette_grey_and_rgb(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 2], [255, 20, 0]], dtype=np.uint8)
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [7] * (252 * 3) + [224, 224, 192]
    save_label_png(tmp_path / "p.png", labels, palette)
    assert Image.open(tmp_path / "p.png").mode == "P"
    assert np.array_equal(load_label_png(tmp_path / "p.png"), labels)
    Image.fromarray(labels, mode="L").save(tmp_path / "l.png")
    assert np.array_equal(load_label_png(tmp_path / "l.png"), labels)
    table = np.asarray(palette[:768], dtype=np.uint8).reshape(256, 3)
    rgb = table[np.array([[0, 1, 2], [255, 1, 0]])]
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert load_label_png(tmp_path / "rgb.png", palette=palette).tolist() == [[0, 1, 2], [255, 1, 0]]
    with pytest.raises(ImageReadError, match="expected palette or grayscale"):
        load_label_png(tmp_path / "rgb.png")
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "odd.png")
    with pytest.raises(ImageReadError, match=r"colour \(1, 2, 3\) is not in the label palette"):
        load_label_png(tmp_path / "odd.png", palette=palette)


def test_label_png_sixteen_bit_out_of_range(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 300]], dtype=np.uint16)).save(tmp_path / "w.png")
    with pytest.raises(ImageReadError, match="expected 0..255"):
        load_label_png(tmp_path / "w.png")


def test_colour_coded_instances(tmp_path: Path) -> None:
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[0, 3:] = (10, 200, 30)  # first in raster order -> 1
    rgb[2:, :2] = (250, 0, 0)  # -> 2
    rgb[3, 5] = (224, 224, 192)  # void
    Image.fromarray(rgb).save(tmp_path / "c.png")
    ids = load_instance_png(tmp_path / "c.png")
    assert ids[0, 3] == 1 and ids[2, 0] == 2 and ids[3, 5] == 255 and ids[1, 1] == 0


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_a_failed_write_names_the_output_it_was_for(tmp_path: Path) -> None:
    """write() on a full disk raises ENOSPC without a file name; the error must say which output failed."""
    import errno

    with pytest.raises(OSError) as raised:
        with atomic_path(tmp_path / "label.png"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path / "label.png")
    assert list(tmp_path.iterdir()) == []


def test_atomic_writes_get_the_mode_a_plain_open_would_give(tmp_path: Path) -> None:
    """Outputs get the mode open() gives under the umask, not a private 0600, so others on a cluster can read them."""
    import os

    from s4net.io.atomic import atomic_write_text

    previous = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        with open(tmp_path / "b.json", "w") as handle:
            handle.write("{}")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == (tmp_path / "b.json").stat().st_mode & 0o777 == 0o640


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path) -> None:
    import subprocess
    import sys

    from s4net.io.atomic import atomic_path, remove_stale_temporaries

    code = (f"import os\nfrom s4net.io.atomic import atomic_path\nwith atomic_path({str(tmp_path / 'a.png')!r}) as t:\n"
            "    t.write_bytes(b'half')\n    os.kill(os.getpid(), 9)")
    subprocess.run([sys.executable, "-c", code], check=False)
    assert len(list(tmp_path.glob(".tmp-*"))) == 1 and not (tmp_path / "a.png").exists()  # killed mid-write
    with atomic_path(tmp_path / "b.png") as live:
        live.write_bytes(b"whole")
        assert remove_stale_temporaries(tmp_path) == 1
        assert [p.name for p in tmp_path.iterdir()] == [live.name]  # the running writer's file stays
    assert [p.name for p in tmp_path.iterdir()] == ["b.png"]
