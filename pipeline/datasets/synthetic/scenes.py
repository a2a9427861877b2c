"""Composing one synthetic scene: textured background, low-contrast distractors, and
salient objects placed with controlled overlap (later objects occlude earlier ones)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image, ImageFilter

from pipeline.datasets.synthetic.appearance import (
    CLASS_APPEARANCE,
    SHAPES,
    TEXTURES,
    UNIT_AREA,
    hsv_to_rgb,
    shape_mask,
    smooth_noise,
    texture_weight,
)

MIN_AREA_FRACTION = 0.05
MAX_AREA_FRACTION = 0.60
MIN_VISIBLE_SHARE = 0.45  # an occluded instance keeps at least this share of its pixels
PLACEMENT_TRIES = 40


@dataclass(frozen=True)
class Placement:
    """Geometry of one object: centre, semi-axes (pixels), rotation (radians)."""

    cx: float
    cy: float
    a: float
    b: float
    theta: float

    @property
    def extent(self) -> float:
        return math.hypot(self.a, self.b)


@dataclass
class Scene:
    """A rendered scene.

    Attributes:
        image: uint8[H, W, 3].
        instance_ids: uint8[H, W]; 0 background (distractors included), k = k-th instance.
        classes: VOC class index of each instance (1..20).
        occluded: whether a later instance covers part of each instance.
        full_areas: pixel area of each instance before occlusion.
    """

    image: np.ndarray
    instance_ids: np.ndarray
    classes: list[int] = field(default_factory=list)
    occluded: list[bool] = field(default_factory=list)
    full_areas: list[int] = field(default_factory=list)


def _local_coords(placement: Placement, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    y0, y1, x0, x1 = box
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    dx, dy = xs + 0.5 - placement.cx, ys + 0.5 - placement.cy
    cos, sin = math.cos(placement.theta), math.sin(placement.theta)
    return (dx * cos + dy * sin) / placement.a, (-dx * sin + dy * cos) / placement.b


def _box(placement: Placement, height: int, width: int) -> tuple[int, int, int, int]:
    reach = placement.extent * 1.15 + 1
    return (
        max(0, int(placement.cy - reach)),
        min(height, int(placement.cy + reach) + 1),
        max(0, int(placement.cx - reach)),
        min(width, int(placement.cx + reach) + 1),
    )


def object_mask(shape: str, placement: Placement, height: int, width: int) -> np.ndarray:
    """Full-image boolean mask of one placed shape."""
    mask = np.zeros((height, width), dtype=bool)
    box = _box(placement, height, width)
    if box[0] >= box[1] or box[2] >= box[3]:
        return mask
    u, v = _local_coords(placement, box)
    mask[box[0] : box[1], box[2] : box[3]] = shape_mask(shape, u, v)
    return mask


def paint_object(
    canvas: np.ndarray,
    mask: np.ndarray,
    placement: Placement,
    texture: str,
    base: np.ndarray,
    pattern: np.ndarray,
    angle: float,
    rng: np.random.Generator,
) -> None:
    """Paint a textured object into float ``canvas`` [H, W, 3] where ``mask`` holds."""
    height, width = mask.shape
    box = _box(placement, height, width)
    u, v = _local_coords(placement, box)
    scale = math.sqrt(placement.a * placement.b)
    weight = texture_weight(texture, u, v, scale, angle + math.degrees(placement.theta), rng.random() * 6.28, rng)
    colour = base[None, None, :] * (1 - weight[..., None]) + pattern[None, None, :] * weight[..., None]
    region = mask[box[0] : box[1], box[2] : box[3]]
    canvas[box[0] : box[1], box[2] : box[3]][region] = colour[region]


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A greyish textured background (float[H, W, 3], 0..255) with an illumination gradient."""
    hue = rng.random() * 360
    colour = hsv_to_rgb(hue, rng.uniform(0.04, 0.22), rng.uniform(0.35, 0.7))
    tint = hsv_to_rgb(hue + rng.uniform(-40, 40), rng.uniform(0.05, 0.25), rng.uniform(0.3, 0.75))
    blend = smooth_noise(rng, height, width, int(rng.integers(2, 5)))
    detail = smooth_noise(rng, height, width, int(rng.integers(8, 20))) - 0.5
    image = colour * (1 - blend[..., None]) + tint * blend[..., None]
    image = image + detail[..., None] * rng.uniform(10, 30)
    if rng.random() < 0.4:  # faint stripes, like floorboards or fabric
        angle = rng.random() * math.pi
        ys, xs = np.mgrid[0:height, 0:width]
        stripes = np.sin((xs * math.cos(angle) + ys * math.sin(angle)) * 2 * math.pi / rng.uniform(5, 12))
        image = image + stripes[..., None] * rng.uniform(3, 8)
    gy, gx = np.mgrid[0:height, 0:width] / max(height, width)
    light = 1 + rng.uniform(-0.15, 0.15) * (gx - 0.5) + rng.uniform(-0.15, 0.15) * (gy - 0.5)
    return image * light[..., None]


def _sample_placement(
    rng: np.random.Generator,
    shape: str,
    area_fraction: float,
    height: int,
    width: int,
    anchor: Placement | None,
) -> Placement:
    aspect = math.exp(rng.uniform(-0.35, 0.35))
    area = area_fraction * height * width
    a = math.sqrt(area / UNIT_AREA[shape] * aspect)
    b = area / (UNIT_AREA[shape] * a)
    theta = rng.uniform(-math.pi, math.pi) if shape != "triangle" else rng.uniform(-0.5, 0.5)
    if anchor is None:
        margin = 0.55 * min(a, b)
        cx = rng.uniform(min(margin, width / 2), max(width - margin, width / 2))
        cy = rng.uniform(min(margin, height / 2), max(height - margin, height / 2))
    else:
        direction = rng.uniform(0, 2 * math.pi)
        distance = rng.uniform(0.45, 0.85) * (math.sqrt(anchor.a * anchor.b) + math.sqrt(a * b))
        cx = anchor.cx + math.cos(direction) * distance
        cy = anchor.cy + math.sin(direction) * distance
    return Placement(cx, cy, a, b, theta)


def salient_colours(rng: np.random.Generator, class_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Base and pattern colour of a salient object of a class (hue jittered)."""
    look = CLASS_APPEARANCE[class_index - 1]
    hue = look.hue + rng.uniform(-12, 12)
    saturation, value = rng.uniform(0.6, 0.95), rng.uniform(0.6, 0.95)
    return hsv_to_rgb(hue, saturation, value), hsv_to_rgb(hue, saturation * 0.8, value * 0.45)


def add_distractors(rng: np.random.Generator, canvas: np.ndarray, count: int) -> None:
    """Small, low-contrast, background-coloured shapes that are not salient (label 0)."""
    height, width = canvas.shape[:2]
    for _ in range(count):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        placement = _sample_placement(rng, shape, rng.uniform(0.004, 0.02), height, width, None)
        mask = object_mask(shape, placement, height, width)
        if not mask.any():
            continue
        local = canvas[mask].mean(axis=0)
        shift = rng.uniform(0.08, 0.16) * rng.choice([-1.0, 1.0])
        base = np.clip(local * (1 + shift) + rng.normal(0, 4, 3), 0, 255)
        pattern = np.clip(base * (1 - 0.08), 0, 255)
        texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
        paint_object(canvas, mask, placement, texture, base, pattern, rng.uniform(0, 180), rng)


def compose_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    classes: Sequence[int],
    want_overlap: bool,
    distractors: int,
) -> Scene:
    """Render a scene with one salient object per entry of ``classes`` (VOC indices 1..20).

    Each object covers 5-60% of the image before occlusion. With ``want_overlap``
    every object after the first is placed against an earlier one, so it covers
    part of it; otherwise objects are kept apart when the tries allow. An object
    that would hide more than ``1 - MIN_VISIBLE_SHARE`` of an earlier one is
    placed again; one that finds no place after the tries is dropped.
    """
    canvas = background(rng, height, width)
    add_distractors(rng, canvas, distractors)
    image_area = height * width
    top_fraction = min(MAX_AREA_FRACTION, max(MIN_AREA_FRACTION * 1.5, 1.1 / max(len(classes), 1)))
    full_masks: list[np.ndarray] = []
    placements: list[Placement] = []
    kept_classes: list[int] = []
    visible = np.zeros((height, width), dtype=np.int16)  # 0 background, k+1 = k-th kept object
    for class_index in classes:
        shape = CLASS_APPEARANCE[class_index - 1].shape
        chosen = None
        for attempt in range(PLACEMENT_TRIES):
            fraction = math.exp(rng.uniform(math.log(MIN_AREA_FRACTION), math.log(top_fraction)))
            anchor = None
            if placements and want_overlap and attempt < PLACEMENT_TRIES - 5:
                anchor = placements[int(rng.integers(len(placements)))]
            placement = _sample_placement(rng, shape, fraction, height, width, anchor)
            mask = object_mask(shape, placement, height, width)
            area = int(mask.sum())
            if area < MIN_AREA_FRACTION * image_area or area > MAX_AREA_FRACTION * image_area:
                continue
            if area < 0.8 * fraction * image_area:  # mostly outside the frame
                continue
            if not want_overlap and placements and attempt < PLACEMENT_TRIES - 5 and (visible[mask] > 0).any():
                continue
            if any(
                ((visible == k + 1) & ~mask).sum() < MIN_VISIBLE_SHARE * full.sum() for k, full in enumerate(full_masks)
            ):
                continue
            chosen = (placement, mask)
            break
        if chosen is None:
            continue
        placement, mask = chosen
        base, pattern = salient_colours(rng, class_index)
        look = CLASS_APPEARANCE[class_index - 1]
        paint_object(canvas, mask, placement, look.texture, base, pattern, look.pattern_angle, rng)
        placements.append(placement)
        full_masks.append(mask)
        kept_classes.append(class_index)
        visible[mask] = len(full_masks)
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))
    pixels = np.asarray(image, dtype=np.float64) + rng.normal(0, 2.5, (height, width, 3))
    occluded = [bool((full & (visible != k + 1)).any()) for k, full in enumerate(full_masks)]
    return Scene(
        image=np.clip(np.rint(pixels), 0, 255).astype(np.uint8),
        instance_ids=visible.astype(np.uint8),
        classes=kept_classes,
        occluded=occluded,
        full_areas=[int(m.sum()) for m in full_masks],
    )


def void_band(instance_ids: np.ndarray, radius: int) -> np.ndarray:
    """VOC-style void band: pixels on either side of a boundary between different
    instance ids (background included), grown by ``radius`` pixels."""
    band = np.zeros(instance_ids.shape, dtype=bool)
    vertical = instance_ids[1:, :] != instance_ids[:-1, :]
    horizontal = instance_ids[:, 1:] != instance_ids[:, :-1]
    band[1:, :] |= vertical
    band[:-1, :] |= vertical
    band[:, 1:] |= horizontal
    band[:, :-1] |= horizontal
    for _ in range(radius):
        grown = band.copy()
        grown[1:, :] |= band[:-1, :]
        grown[:-1, :] |= band[1:, :]
        grown[:, 1:] |= band[:, :-1]
        grown[:, :-1] |= band[:, 1:]
        band = grown
    return band
