"""File input/output shared by the S4Net library and the WSSS pipeline."""

from s4net.io.atomic import atomic_path, atomic_write_bytes, atomic_write_text, write_json
from s4net.io.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    load_instance_png,
    load_label_png,
    load_rgb,
    read_image_size,
    save_image,
    save_label_png,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "load_instance_png",
    "load_label_png",
    "load_rgb",
    "read_image_size",
    "save_image",
    "save_label_png",
    "write_json",
]
