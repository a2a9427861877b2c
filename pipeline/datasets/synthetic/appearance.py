"""What the synthetic objects look like: a shape, a texture and a colour family per class.

Each of the 20 VOC classes is a unique (shape, texture) pair with a hue; every shape,
texture and hue is shared with other classes, so no single cue names the class.
Salient objects are saturated and bright; the background and the distractors are
greyish, so saliency is a matter of contrast, not of shape.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np

SHAPES = ("ellipse", "rectangle", "triangle", "diamond", "hexagon", "star", "cross", "ring", "crescent")
TEXTURES = ("solid", "stripes", "checker", "dots", "gradient", "noise")


@dataclass(frozen=True)
class ClassAppearance:
    """A VOC class's look: shape, texture, hue in degrees, stripe angle in degrees."""

    shape: str
    texture: str
    hue: float
    pattern_angle: float = 0.0


# Index i + 1 is the VOC class index (0 is background).
CLASS_APPEARANCE: tuple[ClassAppearance, ...] = (
    ClassAppearance("triangle", "solid", 210),  # aeroplane
    ClassAppearance("ring", "stripes", 0, 90),  # bicycle
    ClassAppearance("ellipse", "dots", 52),  # bird
    ClassAppearance("crescent", "stripes", 190, 0),  # boat
    ClassAppearance("rectangle", "gradient", 120),  # bottle
    ClassAppearance("rectangle", "checker", 42),  # bus
    ClassAppearance("diamond", "solid", 0),  # car
    ClassAppearance("ellipse", "stripes", 28, 45),  # cat
    ClassAppearance("cross", "solid", 280),  # chair
    ClassAppearance("hexagon", "checker", 330),  # cow
    ClassAppearance("rectangle", "noise", 24),  # diningtable
    ClassAppearance("ellipse", "gradient", 36),  # dog
    ClassAppearance("crescent", "gradient", 12),  # horse
    ClassAppearance("ring", "checker", 260),  # motorbike
    ClassAppearance("star", "solid", 16),  # person
    ClassAppearance("star", "stripes", 100, 135),  # pottedplant
    ClassAppearance("hexagon", "dots", 60),  # sheep
    ClassAppearance("diamond", "stripes", 300, 0),  # sofa
    ClassAppearance("triangle", "checker", 160),  # train
    ClassAppearance("diamond", "gradient", 230),  # tvmonitor
)


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of ``shape`` on local coordinates ``u, v`` (the shape spans about [-1, 1]^2)."""
    radius = np.hypot(u, v)
    if shape == "ellipse":
        return radius <= 1.0
    if shape == "rectangle":
        return (np.abs(u) <= 0.95) & (np.abs(v) <= 0.95)
    if shape == "triangle":  # apex up, base at v = 0.85
        return (v <= 0.85) & (v >= -1.0 + 1.9 * np.abs(u) / 1.1) & (np.abs(u) <= 1.1)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.05
    if shape == "hexagon":
        return _regular_polygon(u, v, 6)
    if shape == "star":
        angle = np.arctan2(v, u) + math.pi / 2
        sector = 2 * math.pi / 5
        folded = np.abs(np.mod(angle, sector) - sector / 2) / (sector / 2)  # 0 at a spike, 1 between
        return radius <= 1.05 - 0.6 * folded
    if shape == "cross":
        return ((np.abs(u) <= 0.36) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.36) & (np.abs(u) <= 1.0))
    if shape == "ring":
        return (radius <= 1.0) & (radius >= 0.52)
    if shape == "crescent":
        return (radius <= 1.0) & (np.hypot(u - 0.5, v + 0.1) > 0.78)
    raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")


def _regular_polygon(u: np.ndarray, v: np.ndarray, sides: int) -> np.ndarray:
    angle = np.arctan2(v, u)
    sector = 2 * math.pi / sides
    local = np.mod(angle, sector) - sector / 2
    return np.hypot(u, v) * np.cos(local) <= math.cos(math.pi / sides)


def _unit_areas(resolution: int = 256) -> dict[str, float]:
    axis = (np.arange(resolution) + 0.5) / resolution * 2.4 - 1.2
    u, v = np.meshgrid(axis, axis)
    cell = (2.4 / resolution) ** 2
    return {shape: float(shape_mask(shape, u, v).sum() * cell) for shape in SHAPES}


UNIT_AREA = _unit_areas()  # area of each shape in local units (semi-axes 1 x 1)


def hsv_to_rgb(hue_degrees: float, saturation: float, value: float) -> np.ndarray:
    """One colour as float[3] in 0..255."""
    red, green, blue = colorsys.hsv_to_rgb((hue_degrees % 360) / 360.0, saturation, value)
    return np.array([red, green, blue]) * 255.0


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1] of shape [H, W]: a ``cells``-wide random grid, bilinearly upsampled."""
    grid = rng.random((cells + 1, cells + 1))
    ys = np.linspace(0, cells, height, endpoint=False) + 0.5 * cells / height
    xs = np.linspace(0, cells, width, endpoint=False) + 0.5 * cells / width
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    y1, x1 = np.minimum(y0 + 1, cells), np.minimum(x0 + 1, cells)
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x1] * fx
    bottom = grid[y1][:, x0] * (1 - fx) + grid[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def texture_weight(
    texture: str,
    u: np.ndarray,
    v: np.ndarray,
    scale: float,
    angle_degrees: float,
    phase: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Mixing weight in [0, 1] between an object's base and pattern colour.

    ``u, v`` are local coordinates; ``scale`` converts them to pixels so stripe
    periods and dot spacing stay a few pixels wide whatever the object size.
    """
    theta = math.radians(angle_degrees)
    along = (u * math.cos(theta) + v * math.sin(theta)) * scale
    if texture == "solid":
        return 0.15 * (v + 1) / 2  # gentle shading
    if texture == "stripes":
        return (np.sin(2 * math.pi * along / 7.0 + phase) > 0).astype(np.float64)
    if texture == "checker":
        cell = 6.0
        return ((np.floor(u * scale / cell + phase) + np.floor(v * scale / cell + phase)) % 2).astype(np.float64)
    if texture == "dots":
        spacing = 7.0
        du = np.mod(u * scale + phase * spacing, spacing) - spacing / 2
        dv = np.mod(v * scale + phase * spacing, spacing) - spacing / 2
        return (np.hypot(du, dv) <= spacing * 0.3).astype(np.float64)
    if texture == "gradient":
        return np.clip((along / max(scale, 1e-6) + 1) / 2, 0, 1) * 0.9
    if texture == "noise":
        height, width = u.shape
        return np.clip((smooth_noise(rng, height, width, max(2, int(scale / 5))) - 0.2) * 1.6, 0, 1)
    raise ValueError(f"unknown texture {texture!r}; expected one of {', '.join(TEXTURES)}")
