"""Outside saliency maps (PoolNet, VST, PFAN, MOVE, ...) as the source of the saliency cues.

Saliency-guided WSSS methods read precomputed maps: one greyscale PNG per image, 0-255,
value / 255 the saliency probability. ``wsss proxy-labels --saliency-maps DIR`` reads the
map of image ``a/b.JPEG`` from ``DIR/a/b.png`` (the label's own relative path,
:func:`pipeline.proxy_labels.manifest.label_relpath`).

What a map may be (:func:`read_saliency_map`):

* 8-bit greyscale (``L``): the intended format;
* 16-bit greyscale (``I;16``, or ``I`` holding 0..65535): value / 65535;
* bilevel (``1``), palette (``P``), ``LA``, ``RGB``, ``RGBA``: converted to greyscale by
  luminance (alpha dropped), as WSSS-BED reads every map (``Image.open(...).convert("L")``,
  ``wsss_bed/run.py``); a grey RGB or a grey-ramp palette gives its grey value exactly;
* anything else (float, CMYK, ...) is refused naming the file.

No EXIF rotation and no resizing: a map whose size differs from its (upright) image is
refused, and the runner lists the image as skipped.

:func:`saliency_from_masks` makes oracle maps from class masks (``wsss saliency-from-masks``).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from s4net.errors import ImageReadError
from s4net.io.atomic import atomic_path
from s4net.io.images import DEFAULT_MAX_PIXELS, check_regular_file, load_label_png

log = logging.getLogger(__name__)

# WSSS-BED's default saliency threshold (`--sal_thresh 0.2`, clovaai/WSSS-BED wsss_bed/run.py), used by every one
# of its recommended scripts; the same value as our ProxyConfig.background
SALIENCY_THRESHOLD = 0.2
FUSIONS = ("split", "wsss_bed")
_GREY_CONVERTED = ("1", "P", "PA", "LA", "RGB", "RGBA")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


@dataclass(frozen=True)
class SaliencyConfig:
    """Where the ``saliency`` and ``cam_saliency`` cues take their saliency from, and how they fuse it.

    Attributes:
        maps: folder of outside saliency maps (``DIR/<image path>.png``); None: S4Net's
            salient instances, merged (the default, and the only source of the ``instances`` cue).
        threshold: a pixel is salient where its saliency is at least this: the map's
            value / 255 for outside maps; the instance union's probability under ``wsss_bed``
            fusion. Unused with S4Net's instances and ``split`` fusion, whose thresholds are
            :class:`~pipeline.cues.label_painting.ProxyConfig`'s ``foreground`` and ``background``.
        fusion: ``split`` (ours: a single keyword names the whole salient foreground, CAMs
            split that of multi-keyword images; :func:`~pipeline.cues.label_painting.saliency_labels`)
            or ``wsss_bed`` (WSSS-BED's rule: CAMs name every salient pixel, whatever the
            keyword count; :func:`~pipeline.cues.label_painting.wsss_bed_labels`; needs ``cam_saliency``).
    """

    maps: str | None = None
    threshold: float = SALIENCY_THRESHOLD
    fusion: str = "split"

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"saliency threshold {self.threshold} must be in (0, 1]")
        if self.fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {self.fusion!r}; expected one of {list(FUSIONS)}")

    @property
    def outside(self) -> bool:
        """Whether the saliency comes from outside maps (no S4Net needed)."""
        return self.maps is not None

    def salient(self, saliency: np.ndarray) -> np.ndarray:
        """bool[H, W]: where ``saliency`` (float[H, W] in [0, 1]) reaches the threshold.

        Compared on the 0..255 scale the maps are written in (``value >= threshold * 255``), so
        a grey level sits exactly on one side. WSSS-BED compares strictly (``sal > 0.2``): at
        the default the two differ on grey level 51 alone.
        """
        return np.asarray(saliency, dtype=np.float64) * 255.0 >= self.threshold * 255.0 - 1e-3


def _grey(image: Image.Image, path: Path) -> np.ndarray:
    """float32[H, W] in [0, 1] from a decoded map (see the module's list of accepted modes)."""
    mode = image.mode
    if mode == "L":
        return np.asarray(image, dtype=np.float32) / 255.0
    if mode in _SIXTEEN_BIT:
        wide = np.asarray(image, dtype=np.int64)
        if wide.size and (wide.min() < 0 or wide.max() > 65535):
            raise ImageReadError(path, f"saliency map values span {wide.min()}..{wide.max()}; expected 0..65535")
        return (wide / 65535.0).astype(np.float32)
    if mode in _GREY_CONVERTED:
        if mode in ("P", "PA") and "transparency" in image.info:
            image = image.convert("RGBA")
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    raise ImageReadError(path, f"saliency map has unsupported mode {mode}; expected 8-bit greyscale (L)")


def read_saliency_map(path: str | os.PathLike, size: tuple[int, int] | None = None,
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """A saliency map as float32[H, W] in [0, 1], and the sha256 of the file's bytes.

    Args:
        path: the map's PNG (any format Pillow reads is accepted; see the module docstring for modes).
        size: (width, height) the map must have (its image's), checked before decoding.

    Raises:
        ImageReadError: missing, not a regular file, unreadable, corrupt, an unsupported mode,
            or a size other than ``size``; the message names the file.
    """
    path = Path(path)
    try:
        check_regular_file(path)
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(path, "no saliency map (missing file)") from None
    except PermissionError:
        raise ImageReadError(path, "saliency map: permission denied") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot read saliency map ({exc.strerror or exc})") from None
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageReadError(path, f"saliency map size {width}x{height} exceeds {max_pixels} pixels")
            if size is not None and (width, height) != tuple(size):
                raise ImageReadError(path, f"saliency map is {width}x{height} but its image is {size[0]}x{size[1]}; "
                                           "maps are not resized")
            image.load()
            return _grey(image, path), digest
    except UnidentifiedImageError:
        problem = "empty saliency map (0 bytes)" if not data else "not a readable saliency map (unknown or corrupt)"
        raise ImageReadError(path, problem) from None
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageReadError):
            raise
        raise ImageReadError(path, f"corrupt saliency map ({exc})") from None


def map_sha256(path: str | os.PathLike) -> str | None:
    """sha256 of a map file's bytes; None when it is missing or not a readable regular file."""
    try:
        check_regular_file(path)
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except (OSError, ImageReadError):
        return None


def saliency_from_masks(masks: str | os.PathLike, out: str | os.PathLike) -> dict[str, int]:
    """Write an oracle saliency map (``L`` PNG) for every class mask under ``masks``, at the same relative path.

    Background (0) becomes 0 and every class (1..254) 255. Void (255) becomes 255 too: in
    VOC it outlines objects and covers difficult ones, which a saliency model calls salient;
    as background it would paint a background ring round every object. Writes are atomic.
    Returns ``{"written": n}``.

    Raises:
        ImageReadError: a mask that cannot be read (the message names it).
    """
    masks, out = Path(masks), Path(out)
    if not masks.is_dir():
        raise ImageReadError(masks, "mask folder is not a directory")
    written = 0
    for path in sorted(p for p in masks.rglob("*.png") if p.is_file()):
        labels = load_label_png(path)
        saliency = np.where(labels == 0, 0, 255).astype(np.uint8)  # void (IGNORE_INDEX) included in 255
        target = out / path.relative_to(masks)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            Image.fromarray(saliency).save(tmp, format="PNG")
        written += 1
    log.info("wrote %d saliency maps to %s", written, out)
    return {"written": written}
