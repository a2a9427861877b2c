"""Property-based checks of the small pieces every reader relies on."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from helpers import label_contacts
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as mask_utils

from pipeline.datasets.synthetic.scenes import void_band
from s4net.data import encode_mask, mask_box
from s4net.errors import InputError
from s4net.io.paths import resolve_inside

ROOT = Path("/data/imagenet")
segments = st.sampled_from(["train", "n02085620", "..", ".", "a.JPEG", "x y", "é", ""])


@given(st.lists(segments, min_size=1, max_size=6))
def test_resolve_inside_refuses_exactly_the_names_that_leave_the_root(parts: list[str]) -> None:
    name = "/".join(parts)
    lexical = os.path.normpath(os.path.join(str(ROOT), name))
    leaves = name == "" or not (lexical == str(ROOT) or lexical.startswith(str(ROOT) + "/"))
    try:
        resolved = resolve_inside(ROOT, name)
    except InputError:
        assert leaves
        return
    assert not leaves and (resolved == ROOT or ROOT in resolved.parents)


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 24), st.integers(1, 24)), elements=st.integers(0, 1)))
def test_rle_roundtrip_and_tight_box(mask: np.ndarray) -> None:
    rle = encode_mask(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == list(mask.shape)
    decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
    assert np.array_equal(decoded, mask)
    x, y, w, h = mask_box(mask)
    if mask.any():
        inside = np.zeros_like(mask)
        inside[int(y) : int(y + h), int(x) : int(x + w)] = 1
        assert not (mask & ~inside.astype(bool)).any()
        assert (mask[int(y)].any() and mask[:, int(x)].any() and mask[int(y + h) - 1].any()
                and mask[:, int(x + w) - 1].any())
    else:
        assert (w, h) == (0.0, 0.0)


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(2, 16), st.integers(2, 16)), elements=st.integers(0, 3)))
def test_void_band_separates_every_pair_of_labels(ids: np.ndarray) -> None:
    labels = ids.copy()
    labels[void_band(ids, 0)] = 255
    assert label_contacts(labels) == 0
    assert np.array_equal(labels[labels != 255], ids[labels != 255])
