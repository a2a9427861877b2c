"""The ImageNet classifier's own class activation maps (pipeline.cues.imagenet_cam) and the `cam` cue."""

from __future__ import annotations

from pathlib import Path

from pipeline.classes import FOREGROUND_CLASSES
from pipeline.datasets.imagenet import load_wnid_map, voc_imagenet_indices


def test_shipped_imagenet_indices_are_positions_among_the_sorted_wnids(realdata: Path) -> None:
    """imagenet_index of every mapped wnid is its position in the sorted ILSVRC-2012 list (a classifier's output)."""
    wnids = sorted(line.split("\t")[0] for line in (realdata / "imagenet_classes.tsv").read_text().splitlines())
    assert len(wnids) == 1000
    mapping, indices = load_wnid_map(), voc_imagenet_indices()
    assert set(indices) == set(FOREGROUND_CLASSES)
    expected = {voc: sorted(wnids.index(w) for w, v in mapping.items() if v == voc) for voc in FOREGROUND_CLASSES}
    assert {voc: sorted(found) for voc, found in indices.items()} == expected
    assert wnids[281] == "n02123045" and 281 in indices["cat"]  # tabby
