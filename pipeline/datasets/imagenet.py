"""ImageNet subsets with image-level VOC keywords.

Layout: ``ROOT/train/<wnid>/<name>.JPEG`` as ImageNet ships it, and a keyword table,
a CSV with header ``image,keywords``: ``image`` is the path relative to ``ROOT``,
``keywords`` one or more VOC class names separated by spaces (``;`` and ``|`` are
read too). Without a table, keywords come from the folder's wnid through the
shipped ``wnid -> VOC class`` map (:func:`load_wnid_map`).
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from pipeline.classes import FOREGROUND_CLASSES
from s4net.errors import DatasetError
from s4net.io.atomic import atomic_write_text
from s4net.io.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, load_rgb
from s4net.io.paths import resolve_inside

KEYWORD_SEPARATORS = re.compile(r"[\s;|]+")
_FOREGROUND = frozenset(FOREGROUND_CLASSES)


@dataclass(frozen=True)
class KeywordEntry:
    """One row of a keyword table: ``image`` relative to the root, its VOC keywords."""

    image: str
    keywords: tuple[str, ...]


@dataclass(frozen=True)
class KeywordSample:
    """An image (uint8[H, W, 3]) with its keywords."""

    image_id: str
    image: np.ndarray
    keywords: tuple[str, ...]


def _wnid_map_rows(path: str | os.PathLike | None) -> tuple[str | Path, list[tuple[int, dict[str, str]]]]:
    """(source, [(line number, row)]) of the shipped ``wnid -> VOC class`` TSV or of the one at ``path``."""
    if path is None:
        text = resources.files("pipeline.datasets").joinpath("wnid_to_voc.tsv").read_text(encoding="utf-8")
        source: str | Path = "pipeline/datasets/wnid_to_voc.tsv"
    else:
        source = Path(path)
        text = source.read_text(encoding="utf-8-sig")
    return source, list(enumerate(csv.DictReader(io.StringIO(text), delimiter="\t"), start=2))


def load_wnid_map(path: str | os.PathLike | None = None) -> dict[str, str]:
    """The ``wnid -> VOC class`` map: the shipped one (244 ILSVRC synsets) or a TSV of your own.

    The TSV has a header and columns ``wnid``, ``imagenet_label``, ``voc_class`` (others, such as
    the shipped map's ``imagenet_index``, are not read here).
    """
    source, rows = _wnid_map_rows(path)
    mapping: dict[str, str] = {}
    for number, row in rows:
        wnid, voc = (row.get("wnid") or "").strip(), (row.get("voc_class") or "").strip()
        if voc not in _FOREGROUND:
            raise DatasetError(source, f"line {number}: {voc!r} is not a VOC class")
        if not re.fullmatch(r"n\d{8}", wnid):
            raise DatasetError(source, f"line {number}: {wnid!r} is not a WordNet id like n02084071")
        mapping[wnid] = voc
    return mapping


def voc_imagenet_indices(path: str | os.PathLike | None = None) -> dict[str, tuple[int, ...]]:
    """VOC class -> the ILSVRC-2012 class indices mapped to it, from the map's ``imagenet_index`` column.

    A synset's index is its position among the 1000 ILSVRC-2012 wnids sorted, the order of
    ImageNet classifiers' outputs (``tools/build_wnid_map.py`` writes the column). Every VOC
    class of :data:`~pipeline.classes.FOREGROUND_CLASSES` is a key (an empty tuple if none maps to it).
    """
    source, rows = _wnid_map_rows(path)
    load_wnid_map(path)  # the wnid and voc_class columns, checked
    indices: dict[str, list[int]] = {name: [] for name in FOREGROUND_CLASSES}
    for number, row in rows:
        text = (row.get("imagenet_index") or "").strip()
        if not text.isdigit() or int(text) >= 1000:
            raise DatasetError(source, f"line {number}: imagenet_index {text!r} is not an ILSVRC class index 0-999")
        indices[row["voc_class"].strip()].append(int(text))
    return {name: tuple(values) for name, values in indices.items()}


def parse_keywords(text: str, source: str | os.PathLike, line: int) -> tuple[str, ...]:
    """Split a keyword field into VOC class names (order kept, duplicates dropped)."""
    names = [name for name in KEYWORD_SEPARATORS.split(text.strip()) if name]
    if not names:
        raise DatasetError(source, f"line {line}: no keywords")
    unknown = [name for name in names if name not in _FOREGROUND]
    if unknown:
        raise DatasetError(
            source,
            f"line {line}: unknown keyword {unknown[0]!r}; expected VOC classes: {', '.join(FOREGROUND_CLASSES)}"
        )
    return tuple(dict.fromkeys(names))


def read_keyword_table(path: str | os.PathLike, root: str | os.PathLike | None = None) -> list[KeywordEntry]:
    """Read and check a keyword CSV (UTF-8, BOM tolerated, blank lines skipped).

    With ``root`` given, each image path must stay inside it. Duplicate images,
    unknown keywords and a missing header are errors naming the file and line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(path, "no such keyword table") from None
    except UnicodeDecodeError:
        raise DatasetError(path, "keyword table is not UTF-8 text") from None
    except OSError as exc:
        raise DatasetError(path, f"cannot read ({exc.strerror or exc})") from None
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    entries: list[KeywordEntry] = []
    first_line: dict[str, int] = {}
    for row in reader:
        number = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in row]
            if header[:2] != ["image", "keywords"]:
                raise DatasetError(path, f"line {number}: header must be 'image,keywords', got {','.join(row)!r}")
            continue
        if len(row) != 2:
            raise DatasetError(path, f"line {number}: expected 2 columns (image,keywords), got {len(row)}")
        image = row[0].strip()
        if not image:
            raise DatasetError(path, f"line {number}: empty image path")
        if root is not None:
            resolve_inside(root, image, source=f"{path}:{number}")
        if image in first_line:
            raise DatasetError(path, f"line {number}: image {image!r} already listed on line {first_line[image]}")
        first_line[image] = number
        entries.append(KeywordEntry(image=image, keywords=parse_keywords(row[1], path, number)))
    if header is None:
        raise DatasetError(path, "keyword table is empty")
    return entries


def write_keyword_table(path: str | os.PathLike, entries: Iterable[KeywordEntry]) -> None:
    """Write a keyword CSV atomically (header ``image,keywords``, keywords space-separated)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "keywords"])
    for entry in entries:
        writer.writerow([entry.image, " ".join(entry.keywords)])
    atomic_write_text(path, buffer.getvalue())


def keywords_from_folders(
    root: str | os.PathLike, wnid_map: dict[str, str] | None = None, split: str = "train"
) -> tuple[list[KeywordEntry], list[str]]:
    """Keyword entries for ``ROOT/<split>/<wnid>/*`` from the wnid map.

    Returns the entries (sorted by path) and the wnid folders skipped because the
    map has no VOC class for them.
    """
    root = Path(root)
    wnid_map = load_wnid_map() if wnid_map is None else wnid_map
    split_dir = root / split
    if not split_dir.is_dir():
        raise DatasetError(split_dir, f"not a directory (expected ImageNet layout {split}/<wnid>/<file>.JPEG)")
    entries: list[KeywordEntry] = []
    skipped: list[str] = []
    for folder in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        voc = wnid_map.get(folder.name)
        if voc is None:
            skipped.append(folder.name)
            continue
        for image in sorted(folder.iterdir()):
            if image.suffix.lower() in IMAGE_EXTENSIONS and not image.name.startswith("."):
                entries.append(KeywordEntry(image=image.relative_to(root).as_posix(), keywords=(voc,)))
    return entries, skipped



def keywords_from_file_names(
    folder: str | os.PathLike, wnid_map: dict[str, str] | None = None
) -> tuple[list[KeywordEntry], list[str]]:
    """Keyword entries for the images directly in ``folder`` whose names start with their wnid, as ImageNet
    names its files (``n02123045_1234.JPEG``, ``n02123045_tabby.JPEG``); paths are relative to ``folder``.

    Returns the entries (sorted by name) and the files skipped: no wnid prefix, or a wnid the map lacks.
    """
    folder = Path(folder)
    wnid_map = load_wnid_map() if wnid_map is None else wnid_map
    if not folder.is_dir():
        raise DatasetError(folder, "not a directory (expected images named <wnid>_<anything>.JPEG)")
    entries: list[KeywordEntry] = []
    skipped: list[str] = []
    for image in sorted(folder.iterdir()):
        if image.suffix.lower() not in IMAGE_EXTENSIONS or image.name.startswith("."):
            continue
        match = re.match(r"(n\d{8})_", image.name)
        voc = wnid_map.get(match[1]) if match else None
        if voc is None:
            skipped.append(image.name)
            continue
        entries.append(KeywordEntry(image=image.name, keywords=(voc,)))
    return entries, skipped

class ImageNetSubset:
    """Keyword-tagged images under an ImageNet-layout root.

    Args:
        root: the folder holding ``train/<wnid>/...`` and the paths of the table.
        keywords: a keyword CSV; ``None`` derives keywords from the wnid folders.
        wnid_map: map used when deriving (default: the shipped one).
        max_pixels: refuse larger images before decoding.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        keywords: str | os.PathLike | None = None,
        wnid_map: dict[str, str] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(self.root, "ImageNet root is not a directory")
        self.max_pixels = max_pixels
        if keywords is None:
            self.entries, self.skipped_wnids = keywords_from_folders(self.root, wnid_map)
        else:
            self.entries, self.skipped_wnids = read_keyword_table(keywords, self.root), []

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[KeywordSample]:
        for index in range(len(self)):
            yield self[index]

    def image_path(self, index: int) -> Path:
        """Absolute path of entry ``index`` (checked to stay inside the root)."""
        return resolve_inside(self.root, self.entries[index].image)

    def __getitem__(self, index: int) -> KeywordSample:
        entry = self.entries[index]
        image = load_rgb(self.image_path(index), max_pixels=self.max_pixels)
        return KeywordSample(image_id=entry.image, image=image, keywords=entry.keywords)

    def keyword_counts(self) -> dict[str, int]:
        """How many images carry each keyword."""
        counts = dict.fromkeys(FOREGROUND_CLASSES, 0)
        for entry in self.entries:
            for name in entry.keywords:
                counts[name] += 1
        return counts


def multi_keyword_fraction(entries: Sequence[KeywordEntry]) -> float:
    """Share of entries with two or more keywords."""
    return sum(len(e.keywords) > 1 for e in entries) / max(len(entries), 1)
