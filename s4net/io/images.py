"""Reading images and label PNGs into numpy arrays, with clear one-line errors.

Every reader raises :class:`~s4net.errors.ImageReadError` naming the file and the
problem; image modes are converted, not rejected: grayscale, palette, CMYK, RGBA
(alpha dropped) and 16-bit inputs all come back as 8-bit RGB, and EXIF orientation
is applied so the pixels are upright as a viewer shows them.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from s4net.errors import ImageReadError
from s4net.io.atomic import atomic_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_MAX_PIXELS = 100_000_000  # 10k x 10k; larger declared sizes are refused before decoding
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


_FILE_KINDS = ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket"),
               (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"))


def not_regular_file(mode: int) -> str | None:
    """What a ``st_mode`` is when it is not a regular file (``"named pipe"``, ``"socket"``, ...); None for one."""
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _FILE_KINDS if test(mode)), "special file")


def check_regular_file(path: str | os.PathLike) -> None:
    """Raise :class:`ImageReadError` unless ``path`` (links followed) is a regular file; never opens it.

    Opening a named pipe blocks until a writer comes, a device may never end: they are
    refused from ``stat`` alone.
    """
    kind = not_regular_file(os.stat(path).st_mode)
    if kind == "directory":
        raise ImageReadError(path, "is a directory, not an image")
    if kind is not None:
        raise ImageReadError(path, f"not a regular file ({kind}); not opened")


def _open(path: Path, max_pixels: int) -> Image.Image:
    """Open ``path`` lazily (header only) and check its declared size; refuse anything but a regular file."""
    try:
        check_regular_file(path)
        image = Image.open(path)
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except PermissionError:
        raise ImageReadError(path, "permission denied") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory, not an image") from None
    except UnidentifiedImageError:
        size = path.stat().st_size if path.exists() else 0
        problem = "empty file (0 bytes)" if size == 0 else "not a readable image (unknown or corrupt format)"
        raise ImageReadError(path, problem) from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"declared size too large ({exc}); refused as a decompression bomb") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageReadError(path, "symbolic link loop") from None
        raise ImageReadError(path, f"cannot open ({exc.strerror or exc})") from None
    width, height = image.size
    if width < 1 or height < 1:
        image.close()
        raise ImageReadError(path, f"empty image ({width}x{height})")
    if width * height > max_pixels:
        image.close()
        raise ImageReadError(
            path,
            f"declared size {width}x{height} exceeds the limit of {max_pixels} pixels; "
            "refused as a possible decompression bomb (raise max_pixels if it is genuine)",
        )
    return image


def _decode(image: Image.Image, path: Path) -> None:
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        text = str(exc)
        if "truncated" in text:
            problem = "truncated image data"
        else:
            problem = f"corrupt image data ({text})"
        raise ImageReadError(path, problem) from None


def read_image_size(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Return ``(width, height)`` after EXIF orientation, reading only the header."""
    path = Path(path)
    with _open(path, max_pixels) as image:
        width, height = image.size
        orientation = image.getexif().get(0x0112, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        gray = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("P", "PA") and "transparency" in image.info:
        image = image.convert("RGBA")
    if mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def load_rgb(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image as ``uint8[H, W, 3]`` RGB, upright after its EXIF orientation.

    Raises:
        ImageReadError: missing, unreadable, empty, truncated, corrupt, or larger
            than ``max_pixels`` (checked from the header before decoding).
    """
    path = Path(path)
    with _open(path, max_pixels) as image:
        _decode(image, path)
        upright = ImageOps.exif_transpose(image)
        array = _to_rgb_array(upright)
    return np.ascontiguousarray(array)


def _read_label_raw(path: Path, max_pixels: int) -> tuple[str, np.ndarray]:
    """Return the file's mode and its pixels: indices for P/L/16-bit, RGB otherwise."""
    with _open(path, max_pixels) as image:
        _decode(image, path)
        mode = image.mode
        if mode in ("P", "L", "1"):
            values = np.asarray(image.convert("L") if mode == "1" else image, dtype=np.uint8)
            return mode, np.ascontiguousarray(values)
        if mode in _SIXTEEN_BIT_MODES:
            wide = np.asarray(image, dtype=np.int64)
            if wide.min() < 0 or wide.max() > 255:
                raise ImageReadError(path, f"label values span {wide.min()}..{wide.max()}; expected 0..255")
            return mode, wide.astype(np.uint8)
        if mode in ("RGB", "RGBA"):
            return mode, np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
    raise ImageReadError(path, f"label PNG has unsupported mode {mode}")


def load_label_png(
    path: str | os.PathLike,
    palette: Sequence[int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Read a label PNG of indices (class or instance ids, 255 void) as ``uint8[H, W]``.

    Palette (``P``) images give their indices, grayscale (``L``, ``I;16``) their
    values, which must fit in 0..255. Colour-coded RGB labels are mapped back to
    indices through ``palette`` (a flat ``[r0, g0, b0, r1, ...]`` list) when given;
    a colour outside it is an error. No EXIF rotation: label files carry none.
    """
    path = Path(path)
    mode, pixels = _read_label_raw(path, max_pixels)
    if pixels.ndim == 2:
        return pixels
    if palette is None:
        raise ImageReadError(path, f"label PNG is {mode}; expected palette or grayscale indices")
    return _rgb_to_indices(pixels, palette, path)


def load_instance_png(
    path: str | os.PathLike,
    void_colour: tuple[int, int, int] = (224, 224, 192),
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Read an instance-id PNG as ``uint8[H, W]``: 0 background, k instance k, 255 void.

    Index PNGs (palette or grayscale, as VOC ``SegmentationObject`` and ILSO) give
    their ids directly. Colour-coded RGB PNGs (one colour per instance, black
    background, as the original S4Net code reads) get ids 1..N in raster order of
    each colour's first pixel; ``void_colour`` (VOC's border colour) becomes 255.
    """
    path = Path(path)
    _, pixels = _read_label_raw(path, max_pixels)
    if pixels.ndim == 2:
        return pixels
    codes = _pack_rgb(pixels)
    void_code = int(_pack_rgb(np.asarray(void_colour)))
    colours, first = np.unique(codes.ravel(), return_index=True)
    ordered = [int(c) for c in colours[np.argsort(first)] if c not in (0, void_code)]
    if len(ordered) > 254:
        raise ImageReadError(path, f"{len(ordered)} instance colours; at most 254 are supported")
    out = np.zeros(codes.shape, dtype=np.uint8)
    out[codes == void_code] = 255
    for instance_id, code in enumerate(ordered, start=1):
        out[codes == code] = instance_id
    return out


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Colours ``[..., 3]`` -> one int64 code each (``r << 16 | g << 8 | b``)."""
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _rgb_to_indices(rgb: np.ndarray, palette: Sequence[int], path: Path) -> np.ndarray:
    table = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
    codes = _pack_rgb(rgb)
    table_codes = _pack_rgb(table)
    lookup = {int(code): index for index, code in reversed(list(enumerate(table_codes)))}
    out = np.empty(codes.shape, dtype=np.uint8)
    for code in np.unique(codes):
        index = lookup.get(int(code))
        if index is None or index > 255:
            code = int(code)
            colour = ((code >> 16) & 255, (code >> 8) & 255, code & 255)
            raise ImageReadError(path, f"colour {colour} is not in the label palette")
        out[codes == code] = index
    return out


def save_label_png(path: str | os.PathLike, labels: np.ndarray, palette: Sequence[int], fsync: bool = True) -> None:
    """Write ``uint8[H, W]`` indices as a palette PNG, atomically.

    ``fsync=False`` leaves out the flush to disk before the rename (still atomic against a
    killed process, not against a power cut): for writers that check every file's checksum
    when they resume, as proxy labels do.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"labels must be uint8[H, W], got {labels.dtype}{list(labels.shape)}")
    image = Image.fromarray(labels, mode="P")
    flat = list(palette) + [0] * (768 - len(palette))
    image.putpalette(flat[:768])
    with atomic_path(path, fsync=fsync) as tmp:
        image.save(tmp, format="PNG", optimize=False)


def save_image(path: str | os.PathLike, rgb: np.ndarray, quality: int = 90) -> None:
    """Write ``uint8[H, W, 3]`` as JPEG or PNG (by suffix), atomically and deterministically."""
    path = Path(path)
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"image must be uint8[H, W, 3], got {rgb.dtype}{list(rgb.shape)}")
    image = Image.fromarray(rgb, mode="RGB")
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        if suffix in (".jpg", ".jpeg"):
            image.save(tmp, format="JPEG", quality=quality, subsampling=0, optimize=False)
        elif suffix == ".png":
            image.save(tmp, format="PNG", optimize=False)
        else:
            raise ValueError(f"{path}: unsupported image suffix {suffix!r}; use .jpg/.jpeg/.png")
