"""How a proxy-label folder is laid out and read back: shards, manifests, checksums.

``OUT/labels/<image path>.png`` holds the labels; ``OUT/manifest[.shard-I-of-N].jsonl`` one
record per image, appended as images finish; ``OUT/summary[.shard-I-of-N].json`` is
written last. The workflow names its shard files through :class:`Shard`'s ``*_for`` methods.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.classes import IGNORE_INDEX, VOC_CLASSES


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based): the images whose position modulo ``count`` is ``index``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= I < N")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """``"I/N"`` with I in 0..N-1."""
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise ValueError(f"shard {text!r} must look like I/N, e.g. 0/4") from None
        return cls(index, count)

    @staticmethod
    def suffix_for(index: int | str, count: int) -> str:
        """``""`` for the whole set, ``.shard-I-of-N`` for a shard: part of the manifest and summary names.

        ``index`` may be a pattern such as ``"{shard}"``, as the workflow's file names need.
        """
        return "" if count == 1 else f".shard-{index}-of-{count}"

    @staticmethod
    def manifest_name_for(index: int | str, count: int) -> str:
        """``manifest[.shard-I-of-N].jsonl`` (``index`` may be a pattern, as in :meth:`suffix_for`)."""
        return f"manifest{Shard.suffix_for(index, count)}.jsonl"

    @staticmethod
    def summary_name_for(index: int | str, count: int) -> str:
        """``summary[.shard-I-of-N].json``, written last by a finished shard."""
        return f"summary{Shard.suffix_for(index, count)}.json"

    @property
    def manifest_name(self) -> str:
        return self.manifest_name_for(self.index, self.count)

    @property
    def summary_name(self) -> str:
        return self.summary_name_for(self.index, self.count)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def label_relpath(image: str) -> str:
    """Where an image's label goes, relative to ``OUT/labels``: its own path with ``.png``."""
    return str(Path(image).with_suffix(".png").as_posix())


def read_manifests(out: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Last record per image over every ``manifest*.jsonl`` in ``out`` (torn lines are skipped)."""
    records: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(out).glob("manifest*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill: that image is redone
                if isinstance(record, dict) and "image" in record:
                    records[record["image"]] = record
    return records


def is_done(record: dict[str, Any] | None, out: Path, fingerprint: str) -> bool:
    """Whether a manifest record names a finished label made with these settings."""
    if not record or record.get("skipped") or record.get("settings") != fingerprint:
        return False
    path = out / "labels" / record["label"]
    return path.is_file() and file_sha256(path) == record.get("sha256")


def pixel_counts(labels: np.ndarray) -> dict[str, int]:
    """Pixels per label name (``ignore`` for 255), only those present."""
    counts = np.bincount(np.asarray(labels, dtype=np.uint8).ravel(), minlength=256)
    return {("ignore" if v == IGNORE_INDEX else VOC_CLASSES[v]): int(counts[v])
            for v in np.flatnonzero(counts).tolist()}
