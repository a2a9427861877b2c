"""ImageNet subsets: the shipped wnid -> VOC map, keyword tables, folder-derived keywords."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from pipeline.classes import FOREGROUND_CLASSES
from pipeline.cli import main as wsss_main
from pipeline.datasets.imagenet import (
    ImageNetSubset,
    KeywordEntry,
    keywords_from_file_names,
    keywords_from_folders,
    load_wnid_map,
    read_keyword_table,
    write_keyword_table,
)
from s4net.errors import DatasetError, InputError
from s4net.io import save_image


def test_shipped_map_covers_every_voc_class_with_real_synsets(realdata: Path) -> None:
    mapping = load_wnid_map()
    ilsvrc = dict(line.split("\t") for line in (realdata / "imagenet_classes.tsv").read_text().splitlines())
    assert set(mapping) <= set(ilsvrc)
    assert set(mapping.values()) == set(FOREGROUND_CLASSES)
    dogs = [w for w, c in mapping.items() if c == "dog"]
    assert len(dogs) == 118 and ilsvrc[dogs[0]] == "Chihuahua" and "timber_wolf" not in {ilsvrc[w] for w in dogs}
    assert sum(c == "bird" for c in mapping.values()) == 59
    assert mapping["n02123045"] == "cat" and "n02129165" not in mapping  # tabby yes, lion no
    shipped = dict(
        (row["wnid"], row["imagenet_label"])
        for row in csv.DictReader(Path(__file__).parents[1].joinpath("pipeline/datasets/wnid_to_voc.tsv").open(),
                                  delimiter="\t")
    )
    assert all(ilsvrc[w] == label for w, label in shipped.items())


def test_shipped_map_agrees_with_labelled_real_samples(realdata: Path) -> None:
    mapping = load_wnid_map()
    rows = list(csv.DictReader((realdata / "imagenet_voc_classes" / "labels.csv").open()))
    assert len(rows) == 43
    assert all(mapping[row["wnid"]] == row["voc_class"] for row in rows)


def test_real_imagenet_samples_as_a_subset(realdata: Path, tmp_path: Path) -> None:
    """The real samples laid out as train/<wnid>/ (symlinked) and read through the derived table."""
    source = realdata / "imagenet_voc_classes"
    for row in csv.DictReader((source / "labels.csv").open()):
        target = tmp_path / "train" / row["wnid"] / row["filename"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source / row["filename"])
    assert wsss_main(["keywords", "--images", str(tmp_path), "--out", str(tmp_path / "k.csv"), "-q"]) == 0
    subset = ImageNetSubset(tmp_path, tmp_path / "k.csv")
    assert len(subset) == 43
    assert all(count >= 1 for count in subset.keyword_counts().values())
    sample = subset[0]
    assert sample.image.ndim == 3 and sample.image.shape[2] == 3 and sample.image.dtype == np.uint8


def test_generated_subset(tiny_world: Path) -> None:
    root = tiny_world / "imagenet"
    subset = ImageNetSubset(root, root / "keywords.csv")
    mapping = load_wnid_map()
    assert len(subset) == 40
    for index, entry in enumerate(subset.entries):
        parts = Path(entry.image).parts
        assert parts[0] == "train" and parts[2].endswith(".JPEG") and parts[2].startswith(parts[1])
        assert mapping[parts[1]] == entry.keywords[0]  # the folder is the first keyword's synset
        assert subset.image_path(index).is_file()
    assert sum(len(e.keywords) > 1 for e in subset.entries) / len(subset) >= 0.2
    derived = ImageNetSubset(root)  # keywords from the folders alone: one each
    assert [e.image for e in derived.entries] == [e.image for e in subset.entries]
    assert all(d.keywords == s.keywords[:1] for d, s in zip(derived.entries, subset.entries, strict=True))


def _table(tmp_path: Path, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / "k.csv"
    path.write_bytes(text.encode(encoding))
    return path


def test_keyword_table_tolerates_bom_blank_lines_and_separators(tmp_path: Path) -> None:
    path = _table(tmp_path, "\ufeffimage,keywords\n\ntrain/a.JPEG,dog\ntrain/b.JPEG,dog;person|cat dog\n\n")
    entries = read_keyword_table(path, tmp_path)
    assert entries == [KeywordEntry("train/a.JPEG", ("dog",)), KeywordEntry("train/b.JPEG", ("dog", "person", "cat"))]
    write_keyword_table(tmp_path / "again.csv", entries)
    assert read_keyword_table(tmp_path / "again.csv") == entries


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("image,keywords\ntrain/a.JPEG,dog\ntrain/b.JPEG,tiger\n", "line 3: unknown keyword 'tiger'"),
        ("image,keywords\ntrain/a.JPEG,dog\ntrain/a.JPEG,cat\n",
         "line 3: image 'train/a.JPEG' already listed on line 2"),
        ("path,label\ntrain/a.JPEG,dog\n", "line 1: header must be 'image,keywords'"),
        ("image,keywords\ntrain/a.JPEG\n", "line 2: expected 2 columns"),
        ("image,keywords\ntrain/a.JPEG, \n", "line 2: no keywords"),
        ("", "keyword table is empty"),
    ],
)
def test_keyword_table_errors_name_file_and_line(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(DatasetError) as exc:
        read_keyword_table(_table(tmp_path, text))
    assert words in str(exc.value) and "k.csv" in str(exc.value)


def test_keyword_table_paths_cannot_escape_root(tmp_path: Path) -> None:
    for name in ("../outside.JPEG", "/etc/passwd", "train/../../x.JPEG"):
        with pytest.raises(InputError, match=r"k.csv:2: image path .* (escapes the dataset root|is absolute)"):
            read_keyword_table(_table(tmp_path, f"image,keywords\n{name},dog\n"), tmp_path)


def test_keyword_table_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not UTF-8"):
        read_keyword_table(_table(tmp_path, "image,keywords\ntrain/\xe9.JPEG,dog\n", encoding="latin-1"))


def test_folders_without_voc_class_are_reported(tmp_path: Path) -> None:
    save_image(tmp_path / "train" / "n02085620" / "n02085620_1.JPEG", np.zeros((4, 4, 3), np.uint8))
    save_image(tmp_path / "train" / "n01440764" / "n01440764_1.JPEG", np.zeros((4, 4, 3), np.uint8))
    entries, skipped = keywords_from_folders(tmp_path)
    assert entries == [KeywordEntry("train/n02085620/n02085620_1.JPEG", ("dog",))]
    assert skipped == ["n01440764"]  # tench
    with pytest.raises(DatasetError, match="expected ImageNet layout"):
        keywords_from_folders(tmp_path / "train")


def test_keywords_from_wnid_file_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("n02085620_7.JPEG", "n01440764_tench.JPEG", "holiday.jpg", "n02123045_tabby.JPEG", "notes.txt"):
        save_image(tmp_path / "flat" / name, np.zeros((4, 4, 3), np.uint8)) if name.endswith(("JPEG", "jpg")) \
            else (tmp_path / "flat" / name).write_text("x")
    entries, skipped = keywords_from_file_names(tmp_path / "flat")
    assert entries == [KeywordEntry("n02085620_7.JPEG", ("dog",)), KeywordEntry("n02123045_tabby.JPEG", ("cat",))]
    assert skipped == ["holiday.jpg", "n01440764_tench.JPEG"]  # no wnid; tench has no VOC class
    out = tmp_path / "kw.csv"
    assert wsss_main(["keywords", "--images", str(tmp_path / "flat"), "--layout", "file-names", "--out", str(out)]) == 0
    assert [e.keywords for e in read_keyword_table(out, tmp_path / "flat")] == [("dog",), ("cat",)]
    assert wsss_main(["keywords", "--images", str(tmp_path), "--layout", "file-names", "--out", str(out)]) != 0
    assert "no image with a VOC keyword" in capsys.readouterr().err


def test_real_imagenet_samples_keywords_from_their_file_names(realdata: Path) -> None:
    entries, skipped = keywords_from_file_names(realdata / "imagenet_voc_classes")
    with open(realdata / "imagenet_voc_classes" / "labels.csv", newline="") as handle:
        expected = {row["filename"]: row["voc_class"] for row in csv.DictReader(handle)}
    assert skipped == []
    assert {e.image: e.keywords[0] for e in entries} == expected
