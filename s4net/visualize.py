"""Pictures of predictions: instance overlays, heat maps, box outlines and panel strips.

Everything works on numpy arrays (uint8 RGB images ``[H, W, 3]``) and returns new arrays;
inputs are never modified. Text is drawn with Pillow's default font.
"""

from __future__ import annotations

import colorsys
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Control colours approximating matplotlib's "inferno" at t = 0, 1/8, ..., 1 (sum of RGB increases).
_INFERNO = np.array(
    [[0, 0, 4], [31, 12, 72], [85, 15, 109], [136, 34, 106], [186, 54, 85],
     [227, 89, 51], [249, 140, 10], [249, 201, 50], [252, 255, 164]], dtype=np.float64)
_TITLE_BAR = 12


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in bitmap font (``load_default`` gives a FreeType font on Pillow >= 10.1)."""
    bitmap = getattr(ImageFont, "load_default_imagefont", None)
    return bitmap() if bitmap is not None else ImageFont.load_default()


def _shape(a: np.ndarray) -> str:
    return "x".join(str(s) for s in a.shape)


def _check_image(image: np.ndarray, name: str = "image") -> None:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be HxWx3, got {_shape(image)}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got {image.dtype}")


def instance_colours(n: int) -> np.ndarray:
    """``n`` distinct saturated colours, uint8 ``[n, 3]``, from golden-ratio hue steps (deterministic)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    golden = (np.sqrt(5.0) - 1.0) / 2.0
    hues = (0.1 + np.arange(n) * golden) % 1.0
    rgb = [colorsys.hsv_to_rgb(h, 0.85, 1.0 if i % 2 == 0 else 0.85) for i, h in enumerate(hues)]
    return np.round(np.array(rgb, dtype=np.float64).reshape(n, 3) * 255).astype(np.uint8)


def _box_pixels(box: np.ndarray, height: int, width: int) -> tuple[int, int, int, int] | None:
    """Inclusive pixel rectangle of box (x1, y1, x2, y2), i.e. pixels x1..x2-1, clipped; None if outside."""
    if not np.all(np.isfinite(box)):
        return None
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    (x1, x2), (y1, y2) = sorted((x1, x2)), sorted((y1, y2))
    x2, y2 = max(x2 - 1, x1), max(y2 - 1, y1)
    if x2 < 0 or y2 < 0 or x1 >= width or y1 >= height:
        return None
    return max(x1, 0), max(y1, 0), min(x2, width - 1), min(y2, height - 1)


def _rgb(colour: np.ndarray) -> tuple[int, int, int]:
    return int(colour[0]), int(colour[1]), int(colour[2])


def draw_boxes(image: np.ndarray, boxes: np.ndarray, colours: np.ndarray | None = None,
               width: int = 1) -> np.ndarray:
    """Box outlines on a copy of ``image`` uint8 ``[H, W, 3]``; ``boxes`` float ``[N, 4]`` (x1, y1, x2, y2)
    in pixels, ``colours`` uint8 ``[N, 3]`` (default: :func:`instance_colours`). Returns uint8 ``[H, W, 3]``."""
    image = np.asarray(image)
    boxes = np.asarray(boxes, dtype=np.float64)
    boxes = boxes.reshape(0, 4) if boxes.size == 0 else boxes
    _check_image(image)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be Nx4, got {_shape(boxes)}")
    colours = instance_colours(len(boxes)) if colours is None else np.asarray(colours)
    if colours.shape != (len(boxes), 3):
        raise ValueError(f"colours are {_shape(colours)} but there are {len(boxes)} boxes")
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    pil = Image.fromarray(image.copy())
    draw = ImageDraw.Draw(pil)
    for box, colour in zip(boxes, colours, strict=True):
        rect = _box_pixels(box, image.shape[0], image.shape[1])
        if rect is not None:
            draw.rectangle(rect, outline=_rgb(colour), width=width)
    return np.asarray(pil).copy()


def _contour(mask: np.ndarray) -> np.ndarray:
    """Inner boundary of bool ``[H, W]``: mask pixels with a 4-neighbour outside the mask (or the image)."""
    p = np.pad(mask, 1, constant_values=False)
    interior = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~interior


def _label(draw: ImageDraw.ImageDraw, text: str, x: int, y: int, size: tuple[int, int],
           colour: np.ndarray) -> None:
    """White ``text`` on the darkened ``colour``, just above (x, y) or below it if no room; kept in image."""
    font = _font()
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tw, th = right - left + 2, bottom - top + 2
    width, height = size
    x = min(max(x, 0), max(width - tw, 0))
    y = y - th if y - th >= 0 else y
    y = min(max(y, 0), max(height - th, 0))
    draw.rectangle((x, y, x + tw - 1, y + th - 1), fill=_rgb(colour * 0.4))
    draw.text((x + 1 - left, y + 1 - top), text, fill=(255, 255, 255), font=font)


def overlay_instances(image: np.ndarray, masks: np.ndarray, boxes: np.ndarray | None = None,
                      scores: np.ndarray | None = None, score_threshold: float = 0.5,
                      mask_threshold: float = 0.5, alpha: float = 0.5) -> np.ndarray:
    """Instances drawn on a copy of ``image`` uint8 ``[H, W, 3]``.

    ``masks`` bool or float ``[N, H, W]`` (probabilities are binarised at ``>= mask_threshold``),
    ``boxes`` float ``[N, 4]`` (x1, y1, x2, y2) pixels, ``scores`` float ``[N]``. Instances scoring below
    ``score_threshold`` are skipped. Each drawn instance gets its mask blended with its colour at ``alpha``,
    a 1-px contour, its box outline and its score ("0.93") at the box's top-left. Returns uint8 ``[H, W, 3]``.
    """
    image, masks = np.asarray(image), np.asarray(masks)
    _check_image(image)
    h, w = image.shape[:2]
    if masks.ndim != 3 or masks.shape[1:] != (h, w):
        raise ValueError(f"masks are {_shape(masks)} but the image is {h}x{w}")
    n = masks.shape[0]
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.shape != (n, 4):
            raise ValueError(f"boxes are {_shape(boxes)} but there are {n} masks (expected {n}x4)")
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (n,):
            raise ValueError(f"scores are {_shape(scores)} but there are {n} masks")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    binary = masks.astype(bool) if masks.dtype == bool else masks >= mask_threshold
    keep = [i for i in range(n) if scores is None or scores[i] >= score_threshold]
    colours = instance_colours(n)
    out = image.astype(np.float64)
    for i in keep:
        m = binary[i]
        out[m] = (1.0 - alpha) * out[m] + alpha * colours[i]
        out[_contour(m)] = colours[i]
    pil = Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for i in keep:
        rect = _box_pixels(boxes[i], h, w) if boxes is not None else None
        if rect is not None:
            draw.rectangle(rect, outline=_rgb(colours[i]))
        if scores is not None:
            if rect is None:
                ys, xs = np.nonzero(binary[i])
                if len(xs) == 0:
                    continue
                rect = (int(xs.min()), int(ys.min()), 0, 0)
            _label(draw, f"{scores[i]:.2f}", rect[0], rect[1], (w, h), colours[i])
    return np.asarray(pil).copy()


def heatmap(values: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """float ``[H, W]`` >= 0 to uint8 ``[H, W, 3]`` with an inferno-like colormap, scaled to ``[0, vmax]``.

    ``vmax`` defaults to the 99th percentile of the finite values (1 if that is 0). NaN becomes black.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"values must be HxW, got {_shape(values)}")
    finite = np.isfinite(values)
    if vmax is None:
        vmax = float(np.percentile(values[finite], 99)) if finite.any() else 0.0
        vmax = vmax if vmax > 0 else 1.0
    elif not vmax > 0:
        raise ValueError(f"vmax must be > 0, got {vmax}")
    t = np.clip(np.where(np.isnan(values), 0.0, values) / vmax, 0.0, 1.0)
    stops = np.linspace(0.0, 1.0, len(_INFERNO))
    rgb = np.stack([np.interp(t, stops, _INFERNO[:, c]) for c in range(3)], axis=-1)
    rgb[np.isnan(values)] = 0.0
    return np.round(rgb).astype(np.uint8)


def side_by_side(panels: Sequence[np.ndarray], titles: Sequence[str] | None = None,
                 gap: int = 4) -> np.ndarray:
    """Equal-height panels (uint8 ``[H, W_i, 3]`` or ``[H, W_i]``) joined left to right with ``gap`` black
    columns; with ``titles``, a 12-px title bar on top. Returns uint8 ``[H (+12), sum W_i + gaps, 3]``."""
    if len(panels) == 0:
        raise ValueError("no panels to join")
    rgb = [np.repeat(p[..., None], 3, axis=2) if p.ndim == 2 else p for p in map(np.asarray, panels)]
    for k, p in enumerate(rgb):
        _check_image(p, f"panel {k}")
    heights = {p.shape[0] for p in rgb}
    if len(heights) != 1:
        raise ValueError(f"panels must share one height, got heights {[p.shape[0] for p in rgb]}")
    if titles is not None and len(titles) != len(rgb):
        raise ValueError(f"{len(titles)} titles for {len(rgb)} panels")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    h = rgb[0].shape[0]
    top = _TITLE_BAR if titles is not None else 0
    out = np.zeros((h + top, sum(p.shape[1] for p in rgb) + gap * (len(rgb) - 1), 3), dtype=np.uint8)
    x, starts = 0, []
    for p in rgb:
        out[top:, x:x + p.shape[1]] = p
        starts.append(x)
        x += p.shape[1] + gap
    if titles is None:
        return out
    font = _font()
    for x0, p, title in zip(starts, rgb, titles, strict=True):
        bar = Image.new("RGB", (p.shape[1], _TITLE_BAR))
        draw = ImageDraw.Draw(bar)
        left, top_, _, _ = draw.textbbox((0, 0), title, font=font)
        draw.text((1 - left, 1 - top_), title, fill=(255, 255, 255), font=font)
        out[:_TITLE_BAR, x0:x0 + p.shape[1]] = np.asarray(bar)
    return out
